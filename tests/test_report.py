import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from uem.eval.harness import evaluate
from uem.eval.report import floor_table, write_report
from eval_helpers import threshold_rejector

pytest.importorskip("matplotlib")


@pytest.fixture
def results(tmp_path):
    rng = np.random.default_rng(0)
    for domain in ("colour", "sketch"):
        for cat in ("animal", "food", "flag"):
            for i in range(3):
                p = tmp_path / "data" / domain / cat / f"{cat}{i}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(p)

    def embed(paths):   # identity + a little domain noise
        base = {f"{c}{i}": rng.normal(size=8) for c in ("animal", "food", "flag") for i in range(3)}
        return np.array([base[Path(p).stem] + 0.3 * rng.normal(size=8) for p in paths], np.float32)

    return evaluate(embed, tmp_path / "data", protocol="open", seed=0, k=(1, 3),
                    reject_fn=threshold_rejector(0.2), n_examples=3)


def test_write_report_files_and_contents(results, tmp_path):
    floor = {"colour->sketch": {"top1_identity": 0.5, "map": 0.4}}
    out = write_report(results, tmp_path / "report", floor=floor, command="uemctl eval m.uem data")
    for name in ("results.json", "report.md", "bars.png", "openset_hist.png", "openset_roc.png",
                 "sheets/colour_to_sketch.png", "sheets/sketch_to_colour.png"):
        assert (tmp_path / "report" / name).is_file(), name
        assert name in out
    md = (tmp_path / "report" / "report.md").read_text()
    assert "colour->sketch" in md and "## Open set" in md and "uemctl eval m.uem data" in md
    assert "floor top-1" in md and "![" in md
    back = json.loads((tmp_path / "report" / "results.json").read_text())
    assert back["protocol"] == "open" and len(back["pairs"]) == 2
    with Image.open(tmp_path / "report" / "sheets" / "colour_to_sketch.png") as im:
        assert im.width > 96 * 4 and im.height > 96 * 3     # query + top-3 per row, 3 rows


def test_floor_table_from_a_harness_result(results):
    t = floor_table(results)
    assert set(t) == {"colour->sketch", "sketch->colour"}
    assert t["colour->sketch"]["map"] == results["pairs"][0]["map"]
    assert floor_table(None) == {}


def test_report_without_open_set_or_sheets(results, tmp_path):
    for p in results["pairs"]:
        p["open_set"] = None
    out = write_report(results, tmp_path / "r2", sheets=False)
    assert "openset_roc.png" not in out and not (tmp_path / "r2" / "sheets").exists()
    assert "need a rejection rule" in (tmp_path / "r2" / "report.md").read_text()
