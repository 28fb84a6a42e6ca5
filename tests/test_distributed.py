"""Multi-process training: 2 CPU processes (torchrun, gloo) against one process, on tiny data.

Same config, seed and GLOBAL batch, one torch thread per process on both sides. The two runs may
differ only by float rounding: BatchNorm's global statistics are two per-rank partial sums
all-reduced (one process: one kernel's reduction), gradients are summed across ranks in another
order than one backward pass, and the matmuls run on half-size slices.

What that rounding grows to depends on the run, so the config here is chosen and the tolerance
stated from measurements (2026-12-01, the 2-core dev VM, one-off scripts; benchmarks/RESULTS-archive.md,
"Scale-out: multi-process training"):

* The mechanics are exact: one forward + backward of the trained top on a real batch, in float64,
  1 process vs 2 ranks: gradients equal to 6e-14 relative (float32: 2e-5).
* Training amplifies rounding, and how much depends on the batch. With the earlier config (batch 6
  -> batches of 5, 5, 4 images of 1x1 feature maps, 9 steps) one process against ITSELF with one
  weight tensor (block 14's expand conv) scaled by 1 + 1e-7 * N(0, 1) ended 7e-2 apart in the trained
  weights; 2 processes were 8.6e-2 from 1 process, the same noise. Traced (that config at lr 1e-3:
  still 4e-4 apart): at the third step one ReLU6 input of block 15 was 4.5e-6, the two runs' rounding put it on either side of 0, and that one
  gate changed the step's backbone gradient by 1.1 % (replayed in one process from each run's
  weights: each run's gradient reproduced to 1e-5). No tolerance can tell a bug from that.
* This config (batch 13 -> two batches of 7 per epoch, rank slices 4 + 3; 2 + 1 epochs, 6 steps):
  1 process vs itself perturbed as above: max abs diff of the trained weights 1.2e-5; 1 vs 2
  processes: 5.2e-6 (3.4e-6 of the distance training moved the weights). Bugs injected into the
  2-process run: per-rank BatchNorm statistics 0.44, no gradient averaging (no DDP) 1.7, rank 1's
  memory banks never updated 0.08. ATOL = 1e-4 sits between, 8x above the noise and 800x below the
  smallest bug.
  (Re-measured after the line-art view commit 432cde5: the same numbers.)
(Even one process with 2 threads instead of 1 differs from itself by rounding: the test pins 1.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from uem.engine.preprocess import preprocess_batch
from uem.train import trainer
from uem.train.data import load_images
from uem.train.launch import free_port, torchrun_command
from uem.train.run import load_encoder

sys.path.insert(0, str(Path(__file__).parent))
from test_train import make_data, one_thread, tiny_config  # noqa: E402,F401  (one_thread: autouse, 1 torch thread)

HERE = Path(__file__).resolve().parent
ATOL = 1e-4
LIMIT_S = 300  # a hung process group fails the test (collectives also time out: UEM_DIST_TIMEOUT)


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    src = str(HERE.parent / "src")
    return {**os.environ, "UEM_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1", "UEM_DIST_TIMEOUT": "60",
            "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}


def run_bounded(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run with a time limit; on timeout kill the whole process group (torchrun and its workers)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=LIMIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{cmd[:6]}... did not finish in {LIMIT_S} s:\n{out[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, None)


def torchrun(config: Path, run: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    return run_bounded(torchrun_command(2, [str(HERE / "ddp_worker.py"), str(config), str(run), *extra],
                                        port=free_port()), env)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    # 7 images per domain, global batch 13: two batches of 7, so the ranks' slices are uneven (4/3)
    return make_data(tmp_path_factory.mktemp("data"), n=7)


def ddp_config(data: Path):
    """The run both sides train (see the module docstring for why batch 13): IDSE 2, CDSM 1, pairs 1."""
    return tiny_config(data, epochs_idse=2, epochs_cdsm=1, batch_size=13)


@pytest.fixture(scope="module")
def config(data, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "config.json"
    path.write_text(json.dumps(ddp_config(data).to_dict()))
    return path


@pytest.fixture(scope="module")
def single(data, tmp_path_factory) -> Path:
    return trainer.train(ddp_config(data), tmp_path_factory.mktemp("one") / "run", progress=False)


@pytest.fixture(scope="module")
def double(config, env, tmp_path_factory) -> tuple[Path, Path]:
    """The same run on 2 processes, each rank's writes and output recorded: (run, report stem)."""
    tmp = tmp_path_factory.mktemp("two")
    res = torchrun(config, tmp / "run", env, "--report", str(tmp / "report"))
    assert res.returncode == 0, res.stdout[-3000:]
    return tmp / "run", tmp / "report"


def embeddings(run: Path, data: Path) -> np.ndarray:
    encoder, cfg = load_encoder(run)
    images = load_images(data, cfg.model.preprocess())
    with torch.no_grad():
        return encoder(torch.from_numpy(preprocess_batch(images.paths, cfg.model.preprocess()))).numpy()


def test_two_processes_match_one(single, double, data):
    run2, _ = double
    a = torch.load(single / "encoder.pt", map_location="cpu", weights_only=True)
    b = torch.load(run2 / "encoder.pt", map_location="cpu", weights_only=True)
    assert a.keys() == b.keys()
    trained = [k for k in a if a[k].is_floating_point() and not torch.equal(
        a[k], build_initial()[k])]
    assert trained, "nothing was trained"
    for k in a:
        if "running_" in k:  # BatchNorm statistics (variances up to ~1e2): relative
            torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=ATOL, msg=k)
        else:
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=ATOL, msg=k)
    ea, eb = embeddings(single, data), embeddings(run2, data)
    assert np.abs(ea - eb).max() < ATOL
    pa, pb = np.load(single / "prototypes.npy"), np.load(run2 / "prototypes.npy")
    assert pa.shape == pb.shape and np.abs(pa - pb).max() < ATOL
    la = [json.loads(x) for x in (single / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (run2 / "log.jsonl").read_text().splitlines()]
    assert [r.get("ks") for r in la] == [r.get("ks") for r in lb]
    assert np.allclose([r["loss"] for r in la], [r["loss"] for r in lb], rtol=1e-4)


def build_initial() -> dict[str, torch.Tensor]:
    """The encoder every run starts from (ImageNet backbone, seeded head), to tell what trained."""
    cfg = tiny_config(Path("."))
    torch.manual_seed(cfg.seed)
    return trainer.build_encoder(cfg.model, pretrained=True).state_dict()


def test_only_rank_0_writes_and_prints(double):
    run2, report = double
    r0 = json.loads(report.with_name(report.name + ".0.json").read_text())
    r1 = json.loads(report.with_name(report.name + ".1.json").read_text())
    assert any("encoder.pt" in w for w in r0["writes"]) and any("checkpoint.pt" in w for w in r0["writes"])
    assert r1["writes"] == []
    assert "idse epoch 1/2" in r0["output"] and "done in" in r0["output"]
    for text in ("idse epoch", "trunk cache", "data:", "done in", "decode"):
        assert text not in r1["output"], (text, r1["output"][-2000:])
    for name in ("config.json", "encoder.pt", "checkpoint.pt", "log.jsonl", "loss.png", "prototypes.npy"):
        assert (run2 / name).is_file(), name


def test_resume_on_two_processes(config, data, double, env, tmp_path):
    """Killed after epoch 1 (rank 0 crashes, torchrun stops rank 1), resumed with
    `uemctl train --nproc 2 --resume`: the same weights as the uninterrupted 2-process run."""
    run = tmp_path / "run"
    res = torchrun(config, run, env, "--die-after-epoch", "1")
    assert res.returncode != 0 and "killed after epoch 1" in res.stdout, res.stdout[-3000:]
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not (run / "encoder.pt").exists()
    res = run_bounded([sys.executable, "-m", "uem.cli.app", "train", str(data), "-o", str(run), "--resume",
                       "--nproc", "2", "-q"], env)
    assert res.returncode == 0, res.stdout[-3000:]
    assert res.stdout.count("run written to") == 1
    a = torch.load(double[0] / "encoder.pt", weights_only=True)
    b = torch.load(run / "encoder.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    epochs = [json.loads(x)["epoch"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert epochs == sorted(epochs) and set(epochs) == {0, 1, 2, 3}


@pytest.mark.parametrize("nproc", ["0", "4"])
def test_cli_bad_nproc_is_one_line(data, tmp_path, capsys, nproc):
    from uem.cli.app import main

    code = main(["train", str(data), "-o", str(tmp_path / "run"), "--batch-size", "6", "--nproc", nproc])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--nproc" in err, err
