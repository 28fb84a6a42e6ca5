import subprocess
import sys


def test_engine_import_does_not_import_torch():
    code = "import sys, uem.engine, uem.engine.prototypes, uem.datasets.folders; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
