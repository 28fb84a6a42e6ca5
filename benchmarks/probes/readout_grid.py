"""Which read-out of the untrained network to build bundles on: block x input size x views, in fp32.

    python benchmarks/probes/readout_grid.py DATA --sizes 128,224 --blocks 11,12,13,14,15 [--out F]

One pass of the ImageNet EfficientNet-Lite0 per image and size collects the average-pooled output
of every requested MBConv block, for the image and for its line drawing (`LineArtView`, as the
bundle's encoder draws it). Each read-out is then aligned and scored exactly as
`alignment_grid.py` does (`uem.export.alignscore`) (whitening + maps + CSLS, the export default, and mean + maps + CSLS).
Also the encoder's cost per image: torch fp32, batch 1, one thread, for that block and size
(a relative measure; the bundle's int8 ONNX encoder is faster). Labels are read by the metrics only.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from uem.engine.preprocess import PreprocessSpec, preprocess_batch
from uem.eval.labels import load_labels
from uem.export.alignscore import VARIANTS, score
from uem.train.backbone import load_pretrained
from uem.train.config import ModelConfig
from uem.train.model import LineArtView


@torch.no_grad()
def pooled_blocks(net, view, x: torch.Tensor, blocks: list[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    n = len(x)
    h = net.stem(torch.cat([x, view(x)]))
    out = {}
    for i, blk in enumerate(net._blocks):
        if i > max(blocks):
            break
        h = blk(h)
        if i in blocks:
            p = h.mean(dim=(2, 3))
            out[i] = (F.normalize(p[:n], dim=1).numpy(), F.normalize(p[n:], dim=1).numpy())
    return out


@torch.no_grad()
def ms_per_image(net, view, size: int, block: int, reps: int = 20) -> float:
    torch.set_num_threads(1)
    x = torch.randn(1, 3, size, size)
    blocks = net._blocks[: block + 1]
    for _ in range(3):
        blocks(net.stem(torch.cat([x, view(x)])))
    t = time.perf_counter()
    for _ in range(reps):
        blocks(net.stem(torch.cat([x, view(x)])))
    torch.set_num_threads(2)
    return (time.perf_counter() - t) / reps * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--sizes", default="128,224")
    ap.add_argument("--blocks", default="11,12,13,14,15")
    ap.add_argument("--variants", default="whiten5.0+map+csls")
    ap.add_argument("--image-only-blocks", default="13", help="blocks also scored without the line drawing")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    blocks = [int(b) for b in args.blocks.split(",")]
    labels = load_labels(args.data)
    net = load_pretrained().eval()
    spec0 = ModelConfig().preprocess()
    view = LineArtView(spec0.mean, spec0.std)
    results = {"data": str(args.data), "rows": []}
    for size in sizes:
        spec = PreprocessSpec(size=size, mean=spec0.mean, std=spec0.std, framing=spec0.framing)
        feats: dict[int, dict[str, tuple[list, list]]] = {b: {} for b in blocks}
        t0 = time.perf_counter()
        for d, lab in labels.items():
            parts = {b: ([], []) for b in blocks}
            for i in range(0, len(lab.paths), 64):
                x = torch.from_numpy(preprocess_batch(lab.paths[i:i + 64], spec))
                for b, (img, line) in pooled_blocks(net, view, x, blocks).items():
                    parts[b][0].append(img)
                    parts[b][1].append(line)
            for b in blocks:
                feats[b][d] = (np.concatenate(parts[b][0]), np.concatenate(parts[b][1]))
        print(f"size {size}: features in {time.perf_counter() - t0:.0f} s", flush=True)
        for b in blocks:
            ms = ms_per_image(net, view, size, b)
            image_only = {int(x) for x in args.image_only_blocks.split(",") if x}
            for views in ("image+line", "image") if b in image_only else ("image+line",):
                vecs = {d: (np.concatenate([img, line], axis=1) / np.sqrt(2) if views == "image+line" else img)
                        for d, (img, line) in feats[b].items()}
                for v in args.variants.split(","):
                    r = score(vecs, labels, VARIANTS[v])
                    row = {"size": size, "block": b, "views": views, "variant": v, "torch_ms_b1_1t": round(ms, 2),
                           "mean_top1_identity": r["mean_top1_identity"], "mean_map": r["mean_map"], "pairs": r["pairs"]}
                    results["rows"].append(row)
                    print(f"size {size} block {b:2d} {views:10s} {v:20s} top-1 {r['mean_top1_identity']:.3f} "
                          f"mAP {r['mean_map']:.3f}  torch {ms:.1f} ms", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
