"""`uemctl train --nproc N`: the same training on N local processes, started by torchrun.

Why torchrun (`python -m torch.distributed.run`) in a subprocess and not torch.multiprocessing:
it is the launcher users run themselves on a cluster (`torchrun --nnodes ... -m uem.train`), so one
rendezvous and environment contract (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*) serves both; its agent
stops every worker when one fails and exits non-zero; workers are fresh interpreters, so nothing is
pickled across processes. The parent passes the already validated TrainConfig as a JSON file to the
worker entry below (`python -m uem.train.launch CONFIG RUN`), so every option of `uemctl train`
reaches the workers without rebuilding a command line.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from ..engine.errors import UemError
from .config import TrainConfig
from .distributed import threads_per_process


def free_port() -> int:
    """A TCP port that was free a moment ago (bound to port 0, then released) for MASTER_PORT."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun_command(nproc: int, module_args: list[str], port: int | None = None) -> list[str]:
    """torchrun on this machine: nproc workers, rendezvous on 127.0.0.1:port."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
            "--master-addr", "127.0.0.1", "--master-port", str(port or free_port()), *module_args]


def launch(cfg: TrainConfig, run_dir: Path, nproc: int, resume: bool = False, quiet: bool = False) -> Path:
    """Train with `nproc` processes on this machine; returns the run directory."""
    if os.environ.get("WORLD_SIZE"):
        raise UemError("--nproc: already started by torchrun; use torchrun's --nproc-per-node alone")
    with tempfile.TemporaryDirectory(prefix="uem-launch-") as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps(cfg.to_dict()), encoding="utf-8")
        args = ["-m", "uem.train.launch", str(config), str(Path(run_dir).resolve())]
        args += ["--resume"] * resume + ["--quiet"] * quiet
        env = {**os.environ, "OMP_NUM_THREADS": str(threads_per_process(nproc))}
        code = subprocess.run(torchrun_command(nproc, args), env=env).returncode
    if code != 0:
        raise UemError(f"training on {nproc} processes failed (torchrun exit code {code}); "
                       "the messages above say which rank failed and why")
    return Path(run_dir)


def worker(argv: list[str]) -> int:
    """One rank: `python -m uem.train.launch CONFIG RUN [--resume] [--quiet]` under torchrun."""
    from rich.console import Console

    from .trainer import train

    err = Console(stderr=True)

    config, run_dir, flags = argv[0], argv[1], set(argv[2:])
    cfg = TrainConfig.from_dict(json.loads(Path(config).read_text(encoding="utf-8")))
    try:
        train(cfg, run_dir, resume="--resume" in flags, progress="--quiet" not in flags, console=err)
    except UemError as e:
        err.print(f"uemctl: error: {e}", markup=False)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1:]))
