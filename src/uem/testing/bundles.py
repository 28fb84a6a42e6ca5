"""Tiny but real bundles for tests and benchmarks, without training or the exporter.

The encoder is a hand-made ONNX graph (Flatten -> MatMul) from 3x32x32 to 8-d whose first three
outputs are the per-channel means, so a picture's colour decides its concept and we know every
answer in advance. Domains differ in style: "photo" fills the frame with the colour, "sketch" draws
a coloured square on white. Concepts per domain are configurable; the concept shared by two domains
is linked (merged) with the radius of the UEM rule, a private one is not.
"""

from __future__ import annotations

import io
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image

from uem.engine.bundle import DomainData, HnswParams, write_bundle
from uem.engine.encoder import Encoder
from uem.engine.geometry import uem_distance, unit_rows
from uem.engine.preprocess import PreprocessSpec, preprocess_batch
from uem.engine.prototypes import PrototypeGraph

SIZE = 32
DIM = 8
# letter-boxed: "sketch" is a coloured square ON WHITE, and content framing would crop the white away
# (tests/test_framing.py covers framing; tests/test_engine_framing.py bundles that use it)
SPEC = PreprocessSpec(size=SIZE, framing="letterbox")
COLOURS = {"red": (220, 30, 30), "green": (30, 190, 40), "blue": (30, 40, 220),
           "yellow": (230, 220, 30)}
DEFAULT_CONCEPTS = {"photo": ["red", "green"], "sketch": ["red", "blue"]}


def make_encoder(path: Path, *, dim: int = DIM, size: int = SIZE, seed: int = 0,
                 fixed_batch: int | None = None) -> Path:
    """Write the ONNX encoder: outputs 0-2 = channel means, the rest a faint random projection."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    n = 3 * size * size
    w = np.zeros((n, dim), np.float32)
    for c in range(3):
        w[c * size * size:(c + 1) * size * size, c] = 1.0 / (size * size)
    w[:, 3:] = rng.normal(0, 0.3 / np.sqrt(n), size=(n, dim - 3))
    batch = fixed_batch if fixed_batch else "N"
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["image"], ["flat"], axis=1),
         helper.make_node("MatMul", ["flat", "W"], ["embedding"])],
        "tiny_encoder",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, dim])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def draw(colour: str, domain: str, rng: np.random.Generator, size: int = 48) -> Image.Image:
    """A noisy picture of `colour` in the style of `domain`."""
    rgb = np.array(COLOURS[colour], np.float32)
    if domain == "sketch":
        a = np.full((size, size, 3), 255.0, np.float32)
        m = size // 8
        a[m:-m, m:-m] = rgb
    else:
        a = np.broadcast_to(rgb, (size, size, 3)).copy()
    a += rng.normal(0, 12, a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def write_images(folder: Path, concepts: dict[str, list[str]], n_per: int, seed: int) -> dict:
    """folder/<domain>/<colour>/<i>.png; returns {domain: [(path, colour), ...]}."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[tuple[Path, str]]] = {}
    for domain, colours in concepts.items():
        for colour in colours:
            d = folder / domain / colour
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n_per):
                p = d / f"{i}.png"
                draw(colour, domain, rng).save(p)
                out.setdefault(domain, []).append((p, colour))
    return out


def make_bundle(root: Path, *, concepts: dict[str, list[str]] | None = None, n_per: int = 6,
                seed: int = 0, calibration: dict | None = None, hnsw: HnswParams | None = None,
                keep_fp32: bool = False, name: str = "model.uem", alignment=None,
                spec: PreprocessSpec = SPEC) -> Path:
    """Build images, embed them with the tiny encoder, derive prototypes and write a bundle.
    `alignment`: a uem.engine.align.Alignment for the bundle (default none); `spec`: how its
    pictures are preprocessed (default letter-boxed, see SPEC)."""
    concepts = concepts or DEFAULT_CONCEPTS
    root.mkdir(parents=True, exist_ok=True)
    enc_path = make_encoder(root / "src" / "encoder.onnx")
    images = write_images(root / "data", concepts, n_per, seed)
    enc = Encoder(enc_path, threads=1)
    names = list(concepts)
    domains, centroids, owner, members = [], [], [], {}
    means = []
    for di, dom in enumerate(names):
        paths = [p for p, _ in images[dom]]
        vecs = enc.embed(preprocess_batch(paths, spec))
        items = [{"id": f"{dom}/{c}/{p.name}", "path": str(p), "label": c}
                 for p, c in images[dom]]
        domains.append(DomainData(dom, vecs, items))
        means.append(vecs.mean(0))
        for colour in concepts[dom]:
            sel = vecs[[c == colour for _, c in images[dom]]]
            ctr = sel.mean(0)
            members[(dom, colour)] = (len(centroids), sel)
            centroids.append(unit_rows(ctr))
            owner.append(di)
    links, radius = [], []
    for a, b in combinations(names, 2):
        for colour in set(concepts[a]) & set(concepts[b]):
            ia, xa = members[(a, colour)]
            ib, xb = members[(b, colour)]
            links.append([ia, ib])
            radius.append(max(uem_distance(u, v) for u in xa for v in xb))
    graph = PrototypeGraph(domains=names, centroids=np.array(centroids), owner=owner,
                           links=np.array(links).reshape(-1, 2), radius=radius,
                           domain_means=np.array(means))
    bundle = root / name
    write_bundle(bundle, encoder_onnx=enc_path,
                 encoder_fp32_onnx=enc_path if keep_fp32 else None, preprocess=spec,
                 embed_dim=DIM, domains=domains, prototypes=graph,
                 hnsw=hnsw or HnswParams(M=8, ef_construction=40, ef_search=16),
                 calibration=calibration or {}, extra={"parity": {"mean_cos": 1.0, "min_cos": 1.0,
                                                                  "top10_overlap": 1.0}},
                 **({} if alignment is None else {"alignment": alignment}))
    return bundle


def make_aligned_bundle(root: Path, *, align=None, name: str = "aligned.uem", **kw) -> Path:
    """make_bundle with the alignment export would fit from the same vectors (default: whitening,
    pair maps, CSLS over 3 neighbours re-ranking 8 candidates)."""
    from uem.engine.bundle import read_bundle
    from uem.export.align import AlignConfig, fit_alignment

    plain = make_bundle(root, name="unaligned.uem", **kw)
    info = read_bundle(plain)
    vecs = {d: info.load_vectors(d, mmap=False) for d in info.domains}
    cfg = align or AlignConfig(kind="whiten", shrinkage=0.1, maps=True, map_rounds=3, csls_k=3, csls_candidates=8)
    alignment, _ = fit_alignment(vecs, cfg)
    return make_bundle(root, name=name, alignment=alignment, **kw)
