"""Extract block-10 trunk outputs (clean + 2 aug views, line view on) for a data set, and block 13."""
import sys, time, torch, numpy as np
from pathlib import Path
from uem.train.config import ModelConfig
from uem.train.model import build_encoder
from uem.train.data import load_images
from uem.train.augment import AugmentConfig
from uem.train import trunk_cache
torch.set_num_threads(2)
from uem.train.trainer import keep_freed_memory; keep_freed_memory()
data, out = sys.argv[1], sys.argv[2]
views = int(sys.argv[3]) if len(sys.argv) > 3 else 2
mc = ModelConfig(freeze_blocks=11)
enc = build_encoder(mc).eval()
spec = mc.preprocess()
t = time.time()
imgs = load_images(data, spec)
print("loaded", len(imgs), time.time() - t, flush=True)
f10 = trunk_cache.compute(enc, imgs, views, AugmentConfig(), 2024, spec, torch.device("cpu"))
print("b10", f10.shape, time.time() - t, flush=True)
enc14 = build_encoder(ModelConfig(freeze_blocks=14)).eval()
f13 = trunk_cache.advance(enc14, f10, 11)
print("b13", f13.shape, time.time() - t, flush=True)
torch.save({"b10": f10, "b13": f13, "paths": [str(p) for p in imgs.paths], "domain": imgs.domain,
            "domains": imgs.domains}, out)
print("done", time.time() - t, flush=True)
