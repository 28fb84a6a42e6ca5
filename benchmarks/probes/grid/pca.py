"""Cells of the block-13 map under a PCA of several sizes, scored like the bundle (see README.md here)."""
import sys
import numpy as np, torch, torch.nn.functional as F
from pathlib import Path
from uem.export.alignscore import score
from uem.export.align import AlignConfig
from uem.train.model import principal_directions
torch.set_num_threads(2)
from common import load
obj, domains, dom, labs = load(sys.argv[1], sys.argv[2])
members = [np.flatnonzero(dom == d) for d in range(len(domains))]
b13 = obj["b13"][0].float(); N = b13.shape[0]; C = b13.shape[1] // 2
views = [b13[:, :C], b13[:, C:]]
def run(name, z):
    r = score({d: z[members[di]] for di, d in enumerate(domains)}, labs, AlignConfig())
    print(name, f"top1 {r['mean_top1_identity']:.3f} map {r['mean_map']:.3f}", " ".join(f"{p}:{v['top1_identity']:.3f}" for p, v in r['pairs'].items()), flush=True)
for grid in (4, 2):
    feats = [F.normalize(F.adaptive_avg_pool2d(v, grid).flatten(1), dim=1).numpy().astype(np.float64) for v in views]
    for k in [int(x) for x in sys.argv[3].split(",")]:
        halves = []
        for x in feats:
            w, _ = principal_directions(x, dom, k // 2)
            y = (x - x.mean(0)) @ w.T
            halves.append(y / np.linalg.norm(y, axis=1, keepdims=True))
        run(f"grid{grid} pca{k}", (np.concatenate(halves, 1) / np.sqrt(2)).astype(np.float32))
