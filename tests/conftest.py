import os

# Tests must be quick and deterministic on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")
