import os
import shutil
from pathlib import Path

import pytest

# Tests must be quick and deterministic on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def fresh(base, tmp_path) -> Path:
    """A writable copy of the requesting module's `base` bundle (each module builds its own base)."""
    dst = tmp_path / "model.uem"
    shutil.copytree(base, dst)
    return dst
