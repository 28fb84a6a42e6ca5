"""The versions of a run's config.json and the migration of older ones.

A run's config.json records the TrainConfig it was trained with and the layout's version. When a
default or a field's meaning changes, CONFIG_VERSION goes up and `migrate` learns to give an older
file the values it was trained with, so it loads with the behaviour it had; a file written by a newer
uem is refused (ConfigVersionError). `uem.train.config` builds the dataclasses from the migrated dict.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

from ..engine.errors import UemError

# config.json layout; bump it (and extend `migrate`) when a field's meaning or default changes in a
# way that would change what an older run's config.json means.
CONFIG_VERSION = 4

# Fields that were renamed, old name -> new name (version 4 named the epochs after their stages).
# `migrate` moves a stored value to its new name; TrainConfig.with_changes takes the old names too,
# so recorded `--set epochs1=...` commands keep working.
RENAMED_FIELDS = {"epochs1": "epochs_idse", "epochs2": "epochs_cdsm"}


class ConfigError(UemError, ValueError):
    """A configuration value out of range or not one of the choices; or a config.json this code
    cannot read. The message is one line, naming the field(s)."""


class ConfigVersionError(ConfigError):
    """A config.json written by a newer uem (its version is above CONFIG_VERSION)."""


def migrate(d: Mapping[str, Any]) -> dict[str, Any]:
    """A config.json's contents, of any version up to CONFIG_VERSION, in the current layout (a new
    dict; the input is not changed)."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"a config must be a JSON object, not {type(d).__name__}")
    version = d.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ConfigError(f"config version must be a whole number, got {version!r}")
    if version > CONFIG_VERSION:
        raise ConfigVersionError(f"config version {version} was written by a newer uem (this one reads "
                                 f"up to {CONFIG_VERSION}); upgrade uem to use it")
    out = copy.deepcopy(dict(d))
    if version < 1:
        out = _from_version_0(out)
    if out["version"] < 2:
        out = _from_version_1(out)
    if out["version"] < 3:
        out = _from_version_2(out)
    if out["version"] < 4:
        out = _from_version_3(out)
    return out


def _from_version_0(d: dict[str, Any]) -> dict[str, Any]:
    """Version 0 (no "version" key): fields were added over time, each with a new default that
    differs from what runs written before it did. A missing key means the old behaviour:
    the mlp head without the line-art view, SN2M trust switching in stage 2, docs/method.md's global
    merge bar."""
    model = d.get("model", {})
    if isinstance(model, dict):  # anything else is refused when the config is built
        d["model"] = {"head": "mlp", "line_view": False, **model}
    d.setdefault("plain_nn", False)
    d.setdefault("merge_rule", "global")
    d["version"] = 1
    return d


def _from_version_1(d: dict[str, Any]) -> dict[str, Any]:
    """Version 1: the linear head on the 1280-d features at 128 dimensions, 4 IDSE + 2 CDSM epochs
    of batch 64 on 3 cached views; there was no mined-pair stage."""
    model = d.get("model", {})
    if isinstance(model, dict):
        d["model"] = {"head": "linear", "embed_dim": 128, **model}
    for key, old in (("epochs1", 4), ("epochs2", 2), ("epochs_pairs", 0), ("batch_size", 64), ("views", 3),
                     ("lr", 0.03)):
        d.setdefault(key, old)
    d["version"] = 2
    return d


def _from_version_2(d: dict[str, Any]) -> dict[str, Any]:
    """Version 2: pictures were letter-boxed whole (no content framing), and no view was placed on
    a backdrop (augment.place_p 0)."""
    model = d.get("model", {})
    if isinstance(model, dict):
        d["model"] = {"framing": "letterbox", **model}
    augment = d.get("augment", {})
    if isinstance(augment, dict):
        d["augment"] = {"place_p": 0.0, **augment}
    d["version"] = 3
    return d


def _from_version_3(d: dict[str, Any]) -> dict[str, Any]:
    """Version 3: the stages' epochs were `epochs1` (IDSE) and `epochs2` (CDSM); same meaning."""
    for old, new in RENAMED_FIELDS.items():
        if old in d:
            d.setdefault(new, d.pop(old))
    d["version"] = 4
    return d
