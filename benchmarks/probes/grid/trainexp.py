"""Quick experiments: train a read-out on cached trunk features with mined mutual CSLS pairs."""
import time, argparse, itertools, json
import numpy as np, torch, torch.nn.functional as F
from pathlib import Path
from uem.export.alignscore import score
from uem.export.align import AlignConfig
from uem.engine.align import fit_domains, mutual_csls_pairs
from uem.eval.labels import load_labels
from uem.train.backbone import load_pretrained
torch.set_num_threads(2)
from uem.train.trainer import keep_freed_memory; keep_freed_memory()
ap = argparse.ArgumentParser()
ap.add_argument("feats"); ap.add_argument("data")
ap.add_argument("--mode", default="resmlp")   # resmlp | linear | block13 | block1213
ap.add_argument("--epochs", type=int, default=6)
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--tau", type=float, default=0.1)
ap.add_argument("--w-inst", type=float, default=1.0)
ap.add_argument("--w-cross", type=float, default=1.0)
ap.add_argument("--hidden", type=int, default=512)
ap.add_argument("--k", type=int, default=10)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--batch", type=int, default=128)
ap.add_argument("--no-aug", action="store_true")
ap.add_argument("--eval-every", type=int, default=2)
a = ap.parse_args()
torch.manual_seed(a.seed)
obj = torch.load(a.feats, weights_only=False)
domains = obj["domains"]; dom = np.asarray(obj["domain"]); paths = obj["paths"]
labels = load_labels(a.data)
labs = {}
for di, d in enumerate(domains):
    rows = np.flatnonzero(dom == di)
    lab = labels[d]; pos = {str(Path(p).resolve()): i for i, p in enumerate(lab.paths)}
    order = [pos[str(Path(paths[r]).resolve())] for r in rows]
    labs[d] = lab.subset(np.ones(len(lab), bool)); labs[d].paths = [lab.paths[i] for i in order]
    labs[d].categories = lab.categories[order]; labs[d].identities = lab.identities[order]
net = load_pretrained()
if a.mode in ("block13", "block1213"):
    b10 = obj["b10"]
    first = 12 if a.mode == "block1213" else 13
    frozen = net._blocks[11:first].eval()
    V, N, C2, H, W = b10.shape
    flat = b10.reshape(V * N * 2, C2 // 2, H, W)
    with torch.no_grad():
        inp = torch.cat([frozen(flat[i:i+1024].float()).half() for i in range(0, len(flat), 1024)])
    inp = inp.reshape(V, N, 2, *inp.shape[1:])  # (V, N, view, C, h, w)
    blocks = net._blocks[first:14]
    params = list(blocks.parameters())
    def readout(x, train):  # x (B, 2, C, h, w)
        B = x.shape[0]
        blocks.train(train)
        h = blocks(x.reshape(B * 2, *x.shape[2:]).float()).mean((2, 3))
        h = F.normalize(h, dim=1).reshape(B, 2, -1)
        return F.normalize(h.reshape(B, -1), dim=1)
elif a.mode.startswith("grid"):
    from uem.train.model import principal_directions
    g = int(a.mode[4]); b13 = obj["b13"].float()
    V, N, C2, H, W = b13.shape; c = C2 // 2
    x = F.normalize(F.adaptive_avg_pool2d(b13.reshape(V * N * 2, c, H, W), g).flatten(1), dim=1)
    inp = x.reshape(V, N, 2, -1)
    lin = torch.nn.Linear(inp.shape[-1], a.hidden // 2)
    x0 = inp[0].reshape(N * 2, -1).double().numpy()
    w, _ = principal_directions(x0, np.repeat(dom, 2), a.hidden // 2)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w).float()); lin.bias.copy_(torch.from_numpy(-(w @ x0.mean(0))).float())
    mods = torch.nn.ModuleList([lin]); params = list(lin.parameters())
    def readout(x, train):
        h = F.normalize(lin(x.float()), dim=-1)
        return F.normalize(h.reshape(x.shape[0], -1), dim=1)
else:
    b13 = obj["b13"]
    V, N, C2, H, W = b13.shape
    inp = b13.float().mean((3, 4)).reshape(V, N, 2, C2 // 2)  # pooled per view
    c = C2 // 2
    if a.mode == "linear":
        lin = torch.nn.Linear(c, c); torch.nn.init.eye_(lin.weight); torch.nn.init.zeros_(lin.bias)
        mods = torch.nn.ModuleList([lin])
        f = lambda p: lin(p)
    else:
        mlp = torch.nn.Sequential(torch.nn.Linear(c, a.hidden), torch.nn.ReLU(), torch.nn.Linear(a.hidden, c))
        torch.nn.init.zeros_(mlp[2].weight); torch.nn.init.zeros_(mlp[2].bias)
        mods = torch.nn.ModuleList([mlp])
        f = lambda p: p / p.norm(dim=-1, keepdim=True) + mlp(p / p.norm(dim=-1, keepdim=True))
    params = list(mods.parameters())
    def readout(x, train):
        mods.train(train)
        h = F.normalize(f(x.float()), dim=-1)
        return F.normalize(h.reshape(x.shape[0], -1), dim=1)
opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=1e-4)
members = [np.flatnonzero(dom == d) for d in range(len(domains))]
def embed_all():
    with torch.no_grad():
        return torch.cat([readout(inp[0, i:i+512], False) for i in range(0, N, 512)])
def evaluate(z):
    vecs = {d: z[members[di]].numpy() for di, d in enumerate(domains)}
    r = score(vecs, labs, AlignConfig())
    return r
t0 = time.time()
z = embed_all()
r = evaluate(z)
print(f"ep 0 top1 {r['mean_top1_identity']:.3f} map {r['mean_map']:.3f} " + " ".join(f"{p}:{v['top1_identity']:.3f}" for p, v in r['pairs'].items()), flush=True)
for ep in range(a.epochs):
    z = embed_all()
    al = fit_domains({d: z[members[di]].numpy() for di, d in enumerate(domains)}, "whiten", 5.0)
    mu = [torch.from_numpy(al.means[d]) for d in domains]; Wm = [torch.from_numpy(al.whiteners[d]) for d in domains]
    zw = [F.normalize((z[members[di]] - mu[di]) @ Wm[di], dim=1) for di in range(len(domains))]
    # mined partners: partner[d][e] = array of len |d| with index in e or -1
    partner = {}; prec = []
    for d, e in itertools.permutations(range(len(domains)), 2):
        if (e, d) in partner:
            p = np.full(len(members[d]), -1); pe = partner[(e, d)]; ok = pe >= 0
            p[pe[ok]] = np.flatnonzero(ok); partner[(d, e)] = p; continue
        i, j = mutual_csls_pairs(zw[d].numpy(), zw[e].numpy(), a.k)
        p = np.full(len(members[d]), -1); p[i] = j; partner[(d, e)] = p
        idd, ide = labs[domains[d]].identities, labs[domains[e]].identities
        prec.append((domains[d], domains[e], len(i), float(np.mean(idd[i] == ide[j]))))
    print(f"ep {ep+1} mined " + " ".join(f"{x}-{y}:{n}@{q:.3f}" for x, y, n, q in prec), flush=True)
    order = np.random.default_rng([a.seed, ep]).permutation(N)
    lossacc = []
    for s in range(0, N, a.batch):
        idx = order[s:s+a.batch]
        v = np.random.default_rng([a.seed, ep, s]).integers(1 if not a.no_aug else 0, V, size=len(idx)) if not a.no_aug else np.zeros(len(idx), int)
        x = inp[torch.as_tensor(v), torch.as_tensor(idx)]
        out = readout(x, True)
        loss = out.new_zeros(())
        for d in range(len(domains)):
            rows = np.flatnonzero(dom[idx] == d)
            if not len(rows): continue
            slots = np.searchsorted(members[d], idx[rows])
            od = F.normalize((out[rows] - mu[d]) @ Wm[d], dim=1)
            if a.w_inst:
                loss = loss + a.w_inst * F.cross_entropy(od @ zw[d].T / a.tau, torch.as_tensor(slots))
            for e in range(len(domains)):
                if e == d: continue
                pj = partner[(d, e)][slots]; ok = pj >= 0
                if ok.sum() == 0: continue
                loss = loss + a.w_cross * F.cross_entropy(od[ok] @ zw[e].T / a.tau, torch.as_tensor(pj[ok])) * ok.mean() / (len(domains) - 1)
        opt.zero_grad(); loss.backward(); opt.step(); lossacc.append(loss.item())
    msg = f"ep {ep+1} loss {np.mean(lossacc):.3f} {time.time()-t0:.0f}s"
    if (ep + 1) % a.eval_every == 0 or ep + 1 == a.epochs:
        r = evaluate(embed_all())
        msg += f" top1 {r['mean_top1_identity']:.3f} map {r['mean_map']:.3f} " + " ".join(f"{p}:{v['top1_identity']:.3f}" for p, v in r['pairs'].items())
    print(msg, flush=True)
