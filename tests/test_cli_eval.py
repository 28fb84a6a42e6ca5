"""`uemctl eval`: a bundle scored on labelled data, with the report files a person looks at."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uem.cli.app import main
from uem.testing.bundles import make_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("eval"))


def test_eval_writes_results_report_and_plots(bundle, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["eval", str(bundle), str(bundle.parent / "data"), "--protocol", "open", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    res = json.loads((out / "results.json").read_text())
    assert res["protocol"] == "open" and res["bundle"] == str(bundle.resolve())
    n_domains = len(res["domains"])
    assert len(res["pairs"]) == n_domains * (n_domains - 1)
    for p in res["pairs"]:
        assert 0.0 <= p["map"] <= 1.0
        assert p["open_set"] is not None and 0.0 <= p["open_set"]["known_acceptance"] <= 1.0
    assert (out / "report.md").read_text().strip()
    assert (out / "bars.png").stat().st_size > 0
    # the table on stdout names every pair
    for p in res["pairs"]:
        assert p["pair"] in captured.out


def test_eval_one_pair_as_json(bundle, capsys):
    data = bundle.parent / "data"
    domains = sorted(p.name for p in data.iterdir() if p.is_dir())
    code = main(["eval", str(bundle), str(data), "--pair", f"{domains[0]}->{domains[1]}", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    res = json.loads(captured.out)
    assert [p["pair"] for p in res["pairs"]] == [f"{domains[0]}->{domains[1]}"]


@pytest.mark.parametrize("args, message", [
    (["--protocol", "half"], "--protocol"),
    (["--pair", "nope->other"], "unknown domain"),
])
def test_eval_user_mistakes_are_one_line(bundle, capsys, args, message):
    code = main(["eval", str(bundle), str(bundle.parent / "data"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err
