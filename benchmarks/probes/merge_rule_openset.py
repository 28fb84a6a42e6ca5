"""Probe (run after `uemctl demo --workdir /tmp/demo-full`): open-set metrics of the engine rule on the
demo bundle's int8 vectors, prototypes rebuilt with the global vs the local merge rule."""

from pathlib import Path
from uem.engine import Engine
from uem.engine.openset import OpenSetRule
from uem.eval.harness import evaluate
from uem.train.prototypes import build_prototype_graph
eng = Engine.open("/tmp/demo-full/model.uem")
data = Path("/tmp/demo-full/data")
from uem.datasets.folders import scan
files = scan(data)
vecs = {d: eng.embed(p) for d, p in files.items()}
for rule in ("global", "local"):
    g = build_prototype_graph(vecs, seed=2024, rule=rule)
    r = OpenSetRule(g, {})
    res = evaluate(lambda paths: eng.embed(paths), data, pairs=[("twemoji", "notomono"), ("openmoji", "notomono")],
                   reject_fn=r.reject_fn(), n_examples=0, keep_scores=False)
    for p in res["pairs"]:
        o = p["open_set"]
        print(rule, len(g.links), p["pair"], {k: round(o[k], 3) for k in ("private_detection", "known_acceptance", "h_score", "auroc")})
