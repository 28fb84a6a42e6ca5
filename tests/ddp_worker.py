"""A torchrun worker for tests/test_distributed.py: one rank of `uem.train.launch.worker`, plus

  --report FILE      (every rank) write FILE.<rank>.json at exit: the files this rank created,
                     changed, moved or removed under RUN (a sys.addaudithook sees every open, os.open,
                     rename, remove, mkdir), and what it printed on stdout/stderr;
  --die-after-epoch K  rank 0 raises right after writing the checkpoint of epoch K: a crash; torchrun
                     then stops the other rank.

    python -m torch.distributed.run --nproc-per-node 2 tests/ddp_worker.py CONFIG RUN [--resume]
        [--report FILE] [--die-after-epoch K]
"""

from __future__ import annotations

import atexit
import io
import json
import os
import sys
from pathlib import Path

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


class Tee(io.TextIOBase):
    def __init__(self, stream):
        self.stream, self.text = stream, io.StringIO()

    def write(self, s: str) -> int:
        self.text.write(s)
        return self.stream.write(s)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def watch(run: Path, report: Path, rank: int) -> None:
    run = str(run.resolve())
    writes: list[str] = []

    def under_run(path) -> bool:
        if isinstance(path, bytes):
            path = path.decode(errors="replace")
        return isinstance(path, (str, os.PathLike)) and os.path.abspath(os.fspath(path)).startswith(run)

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & WRITE_FLAGS)
            if writing and under_run(path):
                writes.append(f"open {path}")
        elif event in ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "os.truncate"):
            if any(under_run(a) for a in args[:2]):
                writes.append(f"{event} {args[0]}")

    out, err = Tee(sys.stdout), Tee(sys.stderr)
    sys.stdout, sys.stderr = out, err

    def dump() -> None:
        report.with_name(f"{report.name}.{rank}.json").write_text(json.dumps(
            {"writes": writes, "output": out.text.getvalue() + err.text.getvalue()}))

    atexit.register(dump)
    sys.addaudithook(hook)


def main(argv: list[str]) -> int:
    from uem.train import launch, trainer

    rank = int(os.environ["RANK"])
    args, report, die = [], None, None
    it = iter(argv)
    for a in it:
        if a == "--report":
            report = Path(next(it))
        elif a == "--die-after-epoch":
            die = int(next(it))
        else:
            args.append(a)
    if report is not None:
        watch(Path(args[1]), report, rank)
    if die is not None:
        real = trainer.save_checkpoint

        def save_then_die(run_dir, epoch, *a, **kw):
            real(run_dir, epoch, *a, **kw)
            if epoch == die:
                raise SystemExit(f"test: rank {rank} killed after epoch {epoch}")

        trainer.save_checkpoint = save_then_die
    return launch.worker(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
