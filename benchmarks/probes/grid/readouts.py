"""Read-outs of the untrained block-13 map (pooling, cells, several blocks), scored like the bundle (see README.md here)."""
import sys
import numpy as np, torch, torch.nn.functional as F
from pathlib import Path
from uem.export.alignscore import score
from uem.export.align import AlignConfig
from uem.train.backbone import load_pretrained
from uem.train.trainer import keep_freed_memory; keep_freed_memory()
torch.set_num_threads(2)
from common import load
obj, domains, dom, labs = load(sys.argv[1], sys.argv[2])
net = load_pretrained().eval()
b10 = obj["b10"][0]; N = b10.shape[0]
flat = b10.reshape(N * 2, 112, 8, 8)
outs = {}
with torch.no_grad():
    h = flat.float()
    for b in range(11, 16):
        h = torch.cat([net._blocks[b](h[i:i+1024]) for i in range(0, len(h), 1024)]); outs[b] = h
def vec(pool, blocks):
    parts = []
    for b in blocks:
        h = outs[b]
        if pool == "avg": p = h.mean((2, 3))
        elif pool == "max": p = h.amax((2, 3))
        elif pool.startswith("gem"):
            q = float(pool[3:]); p = h.clamp(min=1e-6).pow(q).mean((2, 3)).pow(1 / q)
        elif pool == "grid2": p = F.adaptive_avg_pool2d(h, 2).flatten(1)
        elif pool == "grid2avg": p = torch.cat([F.normalize(F.adaptive_avg_pool2d(h, 2).flatten(1), dim=1), F.normalize(h.mean((2,3)), dim=1)], 1)
        elif pool == "full": p = h.flatten(1)
        elif pool == "avgmaxgrid": p = torch.cat([F.normalize(h.mean((2, 3)), dim=1), F.normalize(h.amax((2, 3)), dim=1), F.normalize(F.adaptive_avg_pool2d(h, 2).flatten(1), dim=1)], 1)
        elif pool == "avgmax": p = torch.cat([F.normalize(h.mean((2, 3)), dim=1), F.normalize(h.amax((2, 3)), dim=1)], 1)
        p = F.normalize(p, dim=1).reshape(N, 2, -1).transpose(0, 1)
        parts += [p[0], p[1]]
    return F.normalize(torch.cat(parts, 1), dim=1).numpy()
members = [np.flatnonzero(dom == d) for d in range(len(domains))]
for pool, blocks in [("grid2", [13]), ("grid2avg", [13]), ("full", [13]), ("avgmaxgrid", [13]), ("avgmax", [12, 13]), ("avgmax", [11, 12, 13]), ("grid2", [12])]:
    z = vec(pool, blocks)
    r = score({d: z[members[di]] for di, d in enumerate(domains)}, labs, AlignConfig())
    print(pool, blocks, f"top1 {r['mean_top1_identity']:.3f} map {r['mean_map']:.3f}", " ".join(f"{p}:{v['top1_identity']:.3f}" for p, v in r['pairs'].items()), flush=True)
