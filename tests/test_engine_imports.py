import subprocess
import sys

import pytest

# The runtime (what a server or `uemctl query` loads) and the test kits shipped with it: none may
# import torch, and none but the CLI may import training or export (the CLI imports their configs,
# which are torch-free, to validate options).
RUNTIME = ["uem.engine", "uem.engine.prototypes", "uem.datasets.folders", "uem.eval", "uem.perf",
           "uem.perf.suite", "uem.testing", "uem.testing.bundles", "uem.testing.reliability"]


def _imported(modules: list[str], names: list[str]) -> list[str]:
    code = (f"import sys, {', '.join(modules)}; "
            f"print(' '.join(n for n in {names!r} if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_engine_import_does_not_import_torch():
    code = "import sys, uem.engine, uem.engine.prototypes, uem.datasets.folders; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("module", RUNTIME)
def test_runtime_and_test_kits_import_neither_torch_nor_training(module):
    assert _imported([module], ["torch", "uem.train", "uem.export"]) == []


def test_serve_and_cli_do_not_import_torch():
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    assert _imported(["uem.serve.app", "uem.cli.app"], ["torch"]) == []
