"""Configs validate themselves, old run configs migrate, newer ones are refused, one merge-rule default."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from uem.cli.app import main
from uem.export.align import AlignConfig
from uem.export.config import ExportConfig
from uem.train.augment import AugmentConfig
from uem.train.config import (CONFIG_VERSION, DEFAULT_MERGE_RULE, ConfigError, ConfigVersionError, ModelConfig,
                              TrainConfig, migrate)
from uem.train.model import build_encoder
from uem.train.run import CONFIG, ENCODER, RunError, load_config, load_encoder

# What a run written before config.json had a version looks like (the fields of the time: no
# "version", "plain_nn", "head" or "line_view"; "merge_rule" recorded as it was trained), plus a key
# that no longer exists.
UNVERSIONED = {
    "data": "/data/emoji3", "domains": ["notomono", "twemoji"], "seed": 2024,
    "model": {"input_size": 32, "embed_dim": 16, "head_hidden": 32, "freeze_blocks": 14},
    "epochs1": 1, "epochs2": 1, "batch_size": 64, "lr": 0.03, "backbone_lr_mult": 0.3, "momentum": 0.9,
    "weight_decay": 0.0005, "tau": 0.07, "bank_momentum": 0.5, "device": "auto", "views": 3,
    "augment": {"crop_scale": [0.6, 1.0], "rotate_deg": 10.0, "style_p": [0.3, 0.2, 0.3, 0.1, 0.1],
                "stroke_p": 0.3},
    "keep_cache": False, "k_min": 16, "k_max": 256, "merge_rule": "global", "merge": True, "sel": True,
    "spda": True, "baseline_k": None, "retired_option": 3,
}


def test_unversioned_run_dir_loads_with_the_behaviour_it_was_trained_with(tmp_path):
    run = tmp_path / "old_run"
    run.mkdir()
    (run / CONFIG).write_text(json.dumps(UNVERSIONED))
    old = ModelConfig(input_size=32, embed_dim=16, head_hidden=32, head="mlp", line_view=False,
                      framing="letterbox")
    torch.save(build_encoder(old, pretrained=False).state_dict(), run / ENCODER)
    encoder, cfg = load_encoder(run)  # strict state-dict load: the mlp head without the line view
    assert cfg.model == old and cfg.plain_nn is False and cfg.merge_rule == "global"
    assert (cfg.epochs_idse, cfg.epochs_cdsm) == (1, 1)  # stored as epochs1 / epochs2 then
    assert cfg.augment == AugmentConfig(place_p=0.0) and cfg.data == "/data/emoji3"
    # written back, it is the current version and means the same
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert cfg.to_dict()["version"] == CONFIG_VERSION and again == cfg


def test_migration_fills_only_what_is_missing_and_leaves_its_input_alone():
    d = {"model": {"head": "linear"}, "plain_nn": True}
    m = migrate(d)
    assert d == {"model": {"head": "linear"}, "plain_nn": True}
    assert m["version"] == 4 and m["model"] == {"head": "linear", "line_view": False, "embed_dim": 128,
                                                "framing": "letterbox"}
    assert m["augment"] == {"place_p": 0.0}
    assert m["plain_nn"] is True and m["merge_rule"] == "global"  # trained before the local default
    # version 1: trained before the mined-pair stage and the grid head
    v1 = TrainConfig.from_dict({"version": 1, "model": {"input_size": 128}})
    assert (v1.model.head, v1.model.embed_dim, v1.epochs_idse, v1.epochs_cdsm, v1.epochs_pairs, v1.views, v1.batch_size,
            v1.lr) == ("linear", 128, 4, 2, 0, 3, 64, 0.03)
    assert TrainConfig.from_dict({"version": 1, "epochs_pairs": 3, "lr": 0.1}).epochs_pairs == 3  # only what is missing
    # a current config is not touched: its defaults are the current ones
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()
    assert TrainConfig.from_dict({"version": 1}).merge_rule == DEFAULT_MERGE_RULE
    # version 2: letter-boxed pictures, no placed views
    v2 = TrainConfig.from_dict({"version": 2})
    assert v2.model.framing == "letterbox" and v2.augment.place_p == 0.0
    assert TrainConfig.from_dict({"version": 3}) == TrainConfig()
    assert TrainConfig().model.framing == "content" and TrainConfig().augment.place_p == 0.5


# A run's config.json as version 3 wrote it (before the epochs were named after their stages).
VERSION_3 = {
    "version": 3, "data": "/data/emoji3", "domains": ["notomono", "twemoji"], "seed": 7,
    "model": {"input_size": 128, "embed_dim": 512, "line_view": True, "head": "grid", "head_hidden": 512,
              "grid": 4, "freeze_blocks": 14, "framing": "content"},
    "epochs1": 3, "epochs2": 2, "epochs_pairs": 5, "batch_size": 128, "merge_rule": "local",
}


def test_a_version_3_run_dir_loads_its_stage_epochs_under_their_new_names(tmp_path):
    run = tmp_path / "v3_run"
    run.mkdir()
    (run / CONFIG).write_text(json.dumps(VERSION_3))
    cfg = load_config(run)
    assert (cfg.epochs_idse, cfg.epochs_cdsm, cfg.epochs_pairs, cfg.seed) == (3, 2, 5, 7)
    stored = cfg.to_dict()
    assert stored["version"] == CONFIG_VERSION == 4
    assert "epochs1" not in stored and "epochs2" not in stored
    assert TrainConfig.from_dict(json.loads(json.dumps(stored))) == cfg
    m = migrate(VERSION_3)
    assert (m["epochs_idse"], m["epochs_cdsm"]) == (3, 2) and "epochs1" not in m and VERSION_3["epochs1"] == 3


def test_a_newer_config_is_refused_with_one_line(tmp_path, capsys):
    with pytest.raises(ConfigVersionError, match="newer uem"):
        TrainConfig.from_dict({"version": CONFIG_VERSION + 1})
    for bad in ("2", -1, True):
        with pytest.raises(ConfigError, match="version"):
            TrainConfig.from_dict({"version": bad})
    run = tmp_path / "future"
    run.mkdir()
    (run / CONFIG).write_text(json.dumps({**TrainConfig().to_dict(), "version": CONFIG_VERSION + 1}))
    with pytest.raises(RunError, match=f"config version {CONFIG_VERSION + 1}"):
        load_config(run)
    assert main(["export", str(run), "-o", str(tmp_path / "x.uem")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "newer uem" in err[0], err


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 1}, "batch_size must be an integer >= 2, got 1"),
    ({"epochs_idse": -1}, "epochs_idse must be an integer >= 0"),
    ({"lr": 0.0}, "lr must be a number > 0"),
    ({"lr": float("nan")}, "lr must be a number > 0, got nan"),
    ({"momentum": 1.0}, "momentum must be a number in [0, 1)"),
    ({"bank_momentum": -0.1}, "bank_momentum must be a number in [0, 1)"),
    ({"device": "tpu"}, "device must be one of auto, cpu, cuda, not 'tpu'"),
    ({"merge_rule": "nearest"}, "merge_rule must be one of global, local"),
    ({"k_min": 40, "k_max": 20}, "k_min (40) must not exceed k_max (20)"),
    ({"baseline_k": 0}, "baseline_k must be an integer >= 1"),
    ({"views": 1.5}, "views must be an integer"),
    ({"sel": "no"}, "sel must be true or false"),
    ({"seed": -3}, "seed must be an integer >= 0"),
    ({"model": ModelConfig(input_size=48, head="linear")}, "input_size must be a multiple of 32 for a trained head, got 48"),
])
def test_train_config_refuses_bad_values(kwargs, message):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"input_size": 16}, "input_size must be an integer >= 32, got 16"),
    ({"embed_dim": 33}, "embed_dim must be even with the line-art view"),
    ({"head": "cnn"}, "head must be one of grid, linear, mlp, pooled"),
    ({"freeze_blocks": 17}, "freeze_blocks must be an integer in [0, 16], got 17"),
    ({"head_hidden": 0}, "head_hidden must be an integer >= 1"),
])
def test_model_config_refuses_bad_values(kwargs, message):
    with pytest.raises(ConfigError) as e:
        ModelConfig(**kwargs)
    assert message in str(e.value)


def test_every_problem_at_once_and_the_pooled_readout_takes_any_size():
    with pytest.raises(ConfigError) as e:
        TrainConfig(batch_size=0, device="gpu", tau=0)
    assert str(e.value).count(";") == 2
    assert TrainConfig(model=ModelConfig(input_size=100, head="pooled", embed_dim=640), epochs_pairs=0).model.input_size == 100
    with pytest.raises(ConfigError, match="the pooled read-out has nothing to train"):
        TrainConfig(model=ModelConfig(head="pooled", embed_dim=384))
    assert ModelConfig(embed_dim=33, line_view=False).embed_dim == 33


def test_augment_config_refuses_bad_values_and_keeps_tuples():
    for kwargs in ({"crop_scale": (0.8, 0.5)}, {"crop_scale": (0.0, 1.0)}, {"style_p": (1, 1)},
                   {"style_p": (0, 0, 0, 0, 0)}, {"stroke_p": 1.5}, {"rotate_deg": -1}):
        with pytest.raises(ValueError):
            AugmentConfig(**kwargs)
    # config.json's lists become the tuples a new config has: the trunk cache key stays the same
    assert repr(AugmentConfig(crop_scale=[0.6, 1.0], style_p=[0.3, 0.2, 0.3, 0.1, 0.1])) == repr(AugmentConfig())
    with pytest.raises(ConfigError, match="augment.stroke_p"):
        TrainConfig.from_dict({"version": 1, "augment": {"stroke_p": 2}})


def test_with_changes_validates_and_rejects_unknown_settings():
    base = TrainConfig()
    cfg = base.with_changes({"epochs_idse": 1, "model.line_view": False, "model.embed_dim": 15,
                             "augment.stroke_p": 0.0})
    # the older names still work (recorded `--set epochs1=...` commands)
    assert base.with_changes({"epochs1": 3, "epochs2": 2}) == base.with_changes({"epochs_idse": 3, "epochs_cdsm": 2})
    assert (cfg.epochs_idse, cfg.model.line_view, cfg.model.embed_dim, cfg.augment.stroke_p) == (1, False, 15, 0.0)
    assert base == TrainConfig()  # the original is unchanged
    for bad in ({"epoch1": 1}, {"model.bogus": 1}, {"optimizer.lr": 1}):
        with pytest.raises(ConfigError, match="unknown setting"):
            base.with_changes(bad)
    with pytest.raises(ConfigError, match="embed_dim must be even"):
        base.with_changes({"model.embed_dim": 15})
    with pytest.raises(ConfigError, match="batch_size"):
        base.with_changes({"batch_size": 1})


def test_the_baseline_switches_off_merging_and_sel():
    assert TrainConfig().merges and TrainConfig().uses_sel and not TrainConfig().baseline
    base = TrainConfig(baseline_k=98)
    assert base.baseline and not base.merges and not base.uses_sel and base.merge and base.sel
    assert not TrainConfig(merge=False).merges and TrainConfig(merge=False).uses_sel
    assert not TrainConfig(sel=False).uses_sel and TrainConfig(sel=False).merges


def test_one_merge_rule_default():
    assert TrainConfig().merge_rule == ExportConfig.merge_rule == ExportConfig().merge_rule == DEFAULT_MERGE_RULE


@pytest.mark.parametrize("kwargs, message", [
    ({"calib": 0}, "calib must be at least 1, got 0"),
    ({"seed": -1}, "seed must be a whole number >= 0"),
    ({"parity_per_domain": 0}, "parity_per_domain must be at least 1"),
    ({"k_prototypes": 0}, "k_prototypes must be at least 1"),
    ({"merge_rule": "bogus"}, "merge rule must be one of global, local, not 'bogus'"),
    ({"open_set": "bogus"}, "open-set rule must be one of anchored, contrast, prototype, not 'bogus'"),
    ({"to": "ftp://x"}, "to: 'ftp://x': expected milvus://HOST:PORT"),
    ({"index_dirs": {"bad name": "/a"}}, "index_dirs: bad domain name 'bad name'"),
    ({"keep_fp32": "yes"}, "keep_fp32 must be true or false"),
    ({"align": "whiten"}, "align must be an AlignConfig"),
])
def test_export_config_refuses_bad_values(kwargs, message):
    with pytest.raises(ConfigError) as e:
        ExportConfig(**kwargs)
    assert message in str(e.value)


def test_export_config_defaults_and_replace():
    cfg = ExportConfig(index_dirs={"sketch": "/data/sk"})
    assert cfg.index_dirs == {"sketch": Path("/data/sk")} and cfg.align == AlignConfig() and cfg.quant.label()
    assert replace(cfg, calib=8).calib == 8
    with pytest.raises(ConfigError, match="calib"):
        replace(cfg, calib=-8)


def _tiny_data(root: Path) -> Path:
    for d in ("a", "b"):
        (root / d).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / d / f"{i}.png")
    return root


@pytest.mark.parametrize("argv, message", [
    (["--input-size", "40", "--grid", "1"], "input_size must be a multiple of 32"),
    (["--freeze-blocks", "17"], "freeze_blocks must be an integer in [0, 16]"),
    (["--embed-dim", "33"], "embed_dim must be even"),
    (["--batch-size", "1"], "batch_size must be an integer >= 2"),
    (["--baseline-k", "0"], "baseline_k must be an integer >= 1"),
    (["--device", "tpu"], "device must be one of auto, cpu, cuda"),
    (["--merge-rule", "nearest"], "merge_rule must be one of global, local"),
    (["--nproc", "70"], "--nproc must be within 1..batch size / 2 (64), got 70"),
    (["--epochs-idse", "1", "--epochs1", "2"], "--epochs-idse 1 and --epochs1 2 (its older name) disagree"),
    (["--epochs2", "-1"], "epochs_cdsm must be an integer >= 0"),  # the older name reaches the config
])
def test_cli_train_bad_values_are_one_line(tmp_path, capsys, argv, message):
    data = _tiny_data(tmp_path / "data")
    assert main(["train", str(data), "-o", str(tmp_path / "run"), "-q", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("uemctl: error:") and message in err[0], err
    assert not (tmp_path / "run").exists()
