"""What the grid probes share: their feature file (feats.py's output) and the labels in its order."""
from pathlib import Path

import numpy as np
import torch

from uem.eval.labels import load_labels


def load(feats_path: str, data: str):
    """(the feature file's dict, domain names, per-image domain index, labels per domain in the
    file's row order). The file is one this probe wrote (feats.py), so it is loaded with pickle."""
    obj = torch.load(feats_path, weights_only=False)
    domains, dom, paths = obj["domains"], np.asarray(obj["domain"]), obj["paths"]
    labels, labs = load_labels(data), {}
    for di, d in enumerate(domains):
        rows = np.flatnonzero(dom == di)
        lab = labels[d]
        pos = {str(Path(p).resolve()): i for i, p in enumerate(lab.paths)}
        order = np.array([pos[str(Path(paths[r]).resolve())] for r in rows])
        labs[d] = type(lab)(d, [lab.paths[i] for i in order], lab.categories[order], lab.identities[order])
    return obj, domains, dom, labs
