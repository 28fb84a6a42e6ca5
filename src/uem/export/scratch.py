"""One scratch folder per export process, so a killed export leaves nothing behind for long.

An export writes temporary files in many places it does not control (our ONNX and quantization
steps, onnxruntime's calibration, torch's exporter), all through `tempfile`. Pointing `tempfile` at
one folder named after the process id gathers them; a process killed with -9 cannot clean up, so
the next export removes the folders whose process is gone. The bundle itself needs none of this:
its own leftovers are collected by the next bundle write.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

PREFIX = "uem-scratch-"
_NAME = re.compile(rf"^{re.escape(PREFIX)}(\d+)-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale(base: Path) -> list[Path]:
    """Delete scratch folders under `base` whose process no longer exists; returns them."""
    gone = []
    for p in Path(base).glob(PREFIX + "*"):
        m = _NAME.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p)
    return gone


@contextlib.contextmanager
def process_scratch() -> Iterator[Path]:
    """Within the block every `tempfile` user writes under one per-process folder (removed after)."""
    base = Path(tempfile.gettempdir())
    remove_stale(base)
    work = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=base))
    previous = tempfile.tempdir
    tempfile.tempdir = str(work)
    try:
        yield work
    finally:
        tempfile.tempdir = previous
        shutil.rmtree(work, ignore_errors=True)
