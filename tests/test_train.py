"""Training pipeline: end to end on tiny generated images (input 32 px, 1 epoch per stage, the grid
head at 1 x 1 cell: the block-13 map of a 32 px image is 1 x 1)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from uem.cli.app import main
from uem.train import losses, stages, trainer, trunk_cache
from uem.train.augment import AugmentConfig, augment
from uem.train.config import ModelConfig, TrainConfig
from uem.train.data import load_images
from uem.train.model import build_encoder, init_linear_head
from uem.train.run import load_encoder


def _draw(i: int, style: str, size: int = 40) -> Image.Image:
    """Image i: a seeded shape, filled with colour ('colour') or only outlined in black ('sketch')."""
    r = np.random.default_rng(i)
    im = Image.new("RGB", (size, size), "white")
    dr = ImageDraw.Draw(im)
    x0, y0 = (int(v) for v in r.integers(2, size // 2, 2))
    box = [x0, y0, x0 + int(r.integers(8, size // 2)), y0 + int(r.integers(8, size // 2))]
    shape = dr.ellipse if i % 2 else dr.rectangle
    if style == "colour":
        shape(box, fill=tuple(int(c) for c in r.integers(0, 220, 3)))
    else:
        shape(box, outline="black", width=2)
    return im


def make_data(root: Path, n: int = 6, subs: tuple[str, ...] = ("s0", "s1")) -> Path:
    for domain, style in (("colour", "colour"), ("sketch", "sketch")):
        for i in range(n):
            path = root / domain / subs[i % len(subs)] / f"{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            _draw(i, style).save(path)
    return root


def tiny_config(data: Path, **kw) -> TrainConfig:
    cfg = TrainConfig(data=str(data), model=ModelConfig(input_size=32, embed_dim=16, head_hidden=32, grid=1),
                      epochs_idse=1, epochs_cdsm=1, epochs_pairs=1, views=2, batch_size=6, k_min=2, k_max=4)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def encoder_state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "encoder.pt", map_location="cpu", weights_only=True)


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one thread is faster than two spinning threads on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def full_run(data, tmp_path_factory) -> Path:
    """2 + 1 + 1 epochs (IDSE, CDSM, pairs), uninterrupted; reused by the output, resume and
    sub-folder tests."""
    out = tmp_path_factory.mktemp("run") / "run"
    return trainer.train(tiny_config(data, epochs_idse=2), out, progress=False)


def test_outputs_exist_and_encoder_loads(full_run):
    for name in ("config.json", "encoder.pt", "checkpoint.pt", "log.jsonl", "loss.png",
                 "prototypes.npy", "prototypes.json"):
        assert (full_run / name).is_file(), name
    assert not (full_run / trunk_cache.CACHE).exists()  # dropped after a finished run
    encoder, cfg = load_encoder(full_run)
    assert cfg.epochs_idse == 2 and cfg.domains == ["colour", "sketch"]
    with torch.no_grad():
        z = encoder(torch.randn(3, 3, 32, 32))
    assert z.shape == (3, 16) and torch.allclose(z.norm(dim=1), torch.ones(3), atol=1e-5)
    log = [json.loads(x) for x in (full_run / "log.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in log if "loss" in r} == {1, 2, 3}
    assert all(np.isfinite(r["loss"]) for r in log if "loss" in r)
    assert [r["pairs"] for r in log if "pairs" in r and "t" not in r][0]["colour-sketch"] >= 1
    state = torch.load(full_run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 4 and state["stage"] == "pairs"


@pytest.mark.parametrize("stage_class", [stages.IdseStage, stages.CdsmStage, stages.PairStage])
def test_loss_decreases_on_a_fixed_batch(data, stage_class):
    """A few optimiser steps on one batch lower each stage's loss (the wiring trains something)."""
    torch.manual_seed(0)
    cfg = tiny_config(data)
    spec = cfg.model.preprocess()
    images = load_images(data, spec)
    encoder = build_encoder(cfg.model, pretrained=True)
    feats = trunk_cache.compute(encoder, images, cfg.views, cfg.augment, cfg.seed, spec, torch.device("cpu"))
    groups = torch.as_tensor(images.domain).repeat(encoder.views)
    init_linear_head(encoder.head, trainer.head_inputs_cached(encoder, feats[0], torch.device("cpu")), groups)  # as train() does
    job = trainer.distributed.setup(torch.device("cpu"))
    ctx = stages.Context(cfg=cfg, encoder=encoder, feats=feats, images=images, device=torch.device("cpu"), job=job)
    clean = ctx.clean_embeddings()
    ctx.banks = [clean[torch.as_tensor(images.members(d))].clone() for d in range(2)]
    stage = stage_class(8)
    stage.first_epoch = 0
    stage.start(ctx, None)
    stage.begin_epoch(ctx, 0, cfg.seed)
    h = feats[1, torch.arange(len(images))].float()
    dom, slot = torch.as_tensor(images.domain), torch.as_tensor(images.slot)
    stages.train_mode(encoder)

    def loss_now() -> torch.Tensor:
        return stage.loss(ctx, encoder.top(h), h, dom, slot)[0]

    before = loss_now().item()
    for _ in range(8):
        loss = loss_now()
        stage.optimizer.zero_grad()
        loss.backward()
        stage.optimizer.step()
    after = loss_now().item()
    assert after < before - 0.05, (stage.name, before, after)


@pytest.mark.parametrize("kill_after", [1, 2], ids=["inside-idse", "idse-cdsm-boundary"])
def test_resume_after_a_kill_gives_the_same_weights(data, full_run, tmp_path, monkeypatch, kill_after):
    """Killed inside IDSE, or right at its end (CDSM then builds its domain classifier and frozen
    copy on resume): the resumed run ends on the uninterrupted run's weights exactly."""
    out = tmp_path / "run"
    real_save = trainer.save_checkpoint

    def save_then_die(run_dir, epoch, *args, **kw):
        real_save(run_dir, epoch, *args, **kw)
        if epoch == kill_after:
            raise KeyboardInterrupt  # killed right after this epoch's checkpoint

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(tiny_config(data, epochs_idse=2), out, progress=False)
    assert not (out / "encoder.pt").exists()
    assert (out / trunk_cache.CACHE).is_file()
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    # resume: the run's own config wins (the epochs passed here are ignored)
    trainer.train(tiny_config(data, epochs_idse=9), out, resume=True, progress=False)
    assert same_weights(encoder_state(out), encoder_state(full_run))
    epochs = [json.loads(x)["epoch"] for x in (out / "log.jsonl").read_text().splitlines()]
    assert epochs == sorted(epochs) and set(epochs) == {0, 1, 2, 3}


def test_resume_inside_the_pair_stage_gives_the_same_weights(data, tmp_path, monkeypatch):
    """Killed after the first of two pair epochs: the resumed run re-mines from the checkpointed
    encoder and restores AdamW's state, ending on the uninterrupted run's weights exactly."""
    cfg = lambda: tiny_config(data, epochs_idse=0, epochs_cdsm=0, epochs_pairs=2)  # noqa: E731
    seen = []
    whole = trainer.train(cfg(), tmp_path / "whole", progress=False, observer=lambda e, m: seen.append((e, m)))
    # the observer sees each epoch's mined pairs, the ones the log counts
    whole_log = [json.loads(x) for x in (whole / "log.jsonl").read_text().splitlines()]
    assert [e for e, _ in seen] == [0, 1]
    assert [m.counts()[(0, 1)] for _, m in seen] == [r["pairs"]["colour-sketch"] for r in whole_log if "t" not in r]
    out = tmp_path / "run"
    real_save = trainer.save_checkpoint

    def save_then_die(run_dir, epoch, *args, **kw):
        real_save(run_dir, epoch, *args, **kw)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(cfg(), out, progress=False)
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    trainer.train(cfg(), out, resume=True, progress=False)
    assert same_weights(encoder_state(out), encoder_state(whole))
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log if "t" not in r] == [0, 1] and all(r["stage"] == 3 for r in log)


def test_sub_folder_names_are_ignored(data, full_run, tmp_path):
    """Renaming the sub-folders (file order kept) changes nothing: same seed, same weights. The
    uninterrupted run on `data` (sub-folders s0, s1) is one side, so only the renamed copy trains."""
    b = make_data(tmp_path / "b", subs=("k1", "k2"))
    ra = full_run
    rb = trainer.train(tiny_config(b, epochs_idse=2), tmp_path / "rb", progress=False)
    assert sorted(p.name for p in data.glob("*/*")) == ["s0", "s0", "s1", "s1"]
    assert same_weights(encoder_state(ra), encoder_state(rb))
    assert (ra / "prototypes.npy").read_bytes() == (rb / "prototypes.npy").read_bytes()


def test_augment_is_seeded_and_keeps_shape():
    pix = np.asarray(_draw(3, "colour", 64))
    cfg = AugmentConfig()
    v1 = augment(pix, cfg, np.random.default_rng([1, 2, 3]))
    v2 = augment(pix, cfg, np.random.default_rng([1, 2, 3]))
    assert v1.shape == pix.shape and v1.dtype == np.uint8 and np.array_equal(v1, v2)
    styles = {augment(pix, AugmentConfig(style_p=tuple(float(i == s) for i in range(5))),
                      np.random.default_rng(0)).tobytes() for s in range(5)}
    assert len(styles) == 5  # every style draws something different


@pytest.mark.parametrize("make", ["missing", "one_domain", "no_images"])
def test_cli_bad_data_is_one_line_and_exit_2(tmp_path, capsys, make):
    root = tmp_path / "d"
    if make == "one_domain":
        make_data(root)
        shutil.rmtree(root / "sketch")
    elif make == "no_images":
        (root / "a").mkdir(parents=True)
        (root / "b").mkdir()
        (root / "b" / "notes.txt").write_text("x")
    code = main(["train", str(root), "-o", str(tmp_path / "run"), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("uemctl: error:"), err
    assert not (tmp_path / "run").exists()


def test_cli_trains(data, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", str(data), "-o", str(out), "-q", "--input-size", "32", "--embed-dim", "16",
                 "--epochs-idse", "1", "--epochs2", "1", "--epochs-pairs", "1", "--grid", "1", "--views", "1", "--batch-size", "6",
                 "--no-sel", "--sn2m"])
    assert code == 0, capsys.readouterr().err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["sel"] is False and cfg["plain_nn"] is False and cfg["model"]["input_size"] == 32
