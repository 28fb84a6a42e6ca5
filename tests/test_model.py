"""The encoder's own pieces: the line-art view, the two-view embedding, the PCA-started linear head."""

import numpy as np
import pytest
import torch

from uem.engine.preprocess import normalize
from uem.train.config import ModelConfig, TrainConfig
from uem.train.model import EncoderNet, LineArtView, init_linear_head


def _view(cfg: ModelConfig, thicken: int) -> LineArtView:
    spec = cfg.preprocess()
    return LineArtView(spec.mean, spec.std, threshold=30.0, thicken=thicken)


def _pixels_back(x: torch.Tensor, cfg: ModelConfig) -> np.ndarray:
    spec = cfg.preprocess()
    mean = torch.tensor(spec.mean).reshape(1, 3, 1, 1)
    std = torch.tensor(spec.std).reshape(1, 3, 1, 1)
    return ((x * std + mean) * 255).round().numpy()


def test_line_art_view_hand_case():
    # 6x6 white picture with a red 2x2 square at rows 2-3, cols 2-3. A pixel is a stroke when it
    # differs from its upper or left neighbour by > 30: the square's top-left corner cells (2,2),
    # (2,3), (3,2) and the pixels right after it, (2,4), (3,4), (4,2), (4,3). (3,3) equals both
    # neighbours (red) and stays white.
    pix = np.full((1, 6, 6, 3), 255, np.uint8)
    pix[0, 2:4, 2:4] = (200, 0, 0)
    cfg = ModelConfig()
    out = _pixels_back(_view(cfg, thicken=0)(torch.from_numpy(normalize(pix, cfg.preprocess()))), cfg)
    strokes = out[0, 0] == 0
    assert np.all(out[0, 0] == out[0, 1]) and np.all(out[0, 1] == out[0, 2])  # grey: black or white
    assert set(np.unique(out)) <= {0.0, 255.0}
    expected = np.zeros((6, 6), bool)
    for r, c in [(2, 2), (2, 3), (3, 2), (2, 4), (3, 4), (4, 2), (4, 3)]:
        expected[r, c] = True
    assert np.array_equal(strokes, expected)


def test_line_art_view_thickens_and_ignores_small_changes():
    pix = np.full((1, 7, 7, 3), 255, np.uint8)
    pix[0, 3, 3] = (0, 0, 0)
    pix[0, 0, :] = (240, 240, 240)  # a change of 15 < threshold 30: no stroke
    cfg = ModelConfig()
    x = torch.from_numpy(normalize(pix, cfg.preprocess()))
    thin = _pixels_back(_view(cfg, 0)(x), cfg)[0, 0] == 0
    thick = _pixels_back(_view(cfg, 1)(x), cfg)[0, 0] == 0
    assert thin.sum() == 3 and thin[3, 3] and thin[4, 3] and thin[3, 4]
    assert np.array_equal(thick, torch.nn.functional.max_pool2d(
        torch.from_numpy(thin[None, None].astype(np.float32)), 3, 1, 1)[0, 0].numpy() > 0)
    assert not thin[:2].any()


def test_two_view_embedding_is_two_unit_halves_and_top_matches_forward():
    torch.manual_seed(0)
    cfg = ModelConfig(input_size=32, embed_dim=16, line_view=True, grid=1)
    enc = EncoderNet(cfg).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        f = enc(x)
        h = enc.trunk(x)
        assert f.shape == (3, 16) and h.shape[1] == 2 * enc.backbone._blocks[cfg.freeze_blocks - 1]._project_conv.out_channels
        assert torch.allclose(f.norm(dim=1), torch.ones(3), atol=1e-6)
        assert torch.allclose(f[:, :8].norm(dim=1), torch.full((3,), 0.5 ** 0.5), atol=1e-6)
        assert torch.allclose(enc.top(h), f, atol=1e-6)
        # the second half is the first half's computation on the line-art view
        single = EncoderNet(ModelConfig(input_size=32, embed_dim=8, line_view=False, grid=1)).eval()
        single.load_state_dict(enc.state_dict())
        assert torch.allclose(f[:, 8:] * 2 ** 0.5, single(enc.line_view(x)), atol=1e-5)
        assert torch.allclose(f[:, :8] * 2 ** 0.5, single(x), atol=1e-5)


@pytest.mark.parametrize("size,freeze", [(128, 14), (64, 14), (96, 12), (128, 5), (32, 0), (160, 16)])
def test_map_side_is_the_trunk_output_side(size, freeze):
    cfg = ModelConfig(input_size=size, freeze_blocks=freeze, head="linear")
    with torch.no_grad():
        h = EncoderNet(cfg).eval().trunk(torch.zeros(1, 3, size, size))
    assert h.shape[-1] == h.shape[-2] == cfg.map_side()


def test_grid_head_reads_the_cells_of_the_map():
    """grid 2 on a 4 x 4 map: each cell is the mean of a 2 x 2 block, per channel, flattened
    channel-major (C, 2, 2), the view's whole vector unit length; then the head, then unit halves."""
    torch.manual_seed(0)
    cfg = ModelConfig(input_size=128, embed_dim=8, grid=2)
    enc = EncoderNet(cfg).eval()
    assert enc.head.in_features == 192 * 4 and cfg.map_side() == 4
    h = torch.randn(2, 2 * 192, 4, 4)
    cells = enc.grid_cells(h)
    img = h[:, :192].reshape(2, 192, 2, 2, 2, 2).mean(dim=(3, 5)).flatten(1)
    line = h[:, 192:].reshape(2, 192, 2, 2, 2, 2).mean(dim=(3, 5)).flatten(1)
    want = torch.nn.functional.normalize(torch.cat([img, line]), dim=1)
    assert torch.allclose(cells, want, atol=1e-6)
    f = enc.top(h)
    halves = torch.nn.functional.normalize(enc.head(want), dim=1) / 2 ** 0.5
    assert torch.allclose(f, torch.cat([halves[:2], halves[2:]], dim=1), atol=1e-6)
    # only the head trains: the blocks after the trunk are not part of this embedding
    assert {id(p) for p in enc.trainable_parameters()} == {id(p) for p in enc.head.parameters()}


def test_grid_must_divide_the_map():
    from uem.train.config import ConfigError

    with pytest.raises(ConfigError, match="grid must divide the trunk's 4 x 4 output map at input_size 128, got 3"):
        ModelConfig(grid=3)
    assert ModelConfig(grid=2).grid == 2 and ModelConfig(input_size=64, grid=2).map_side() == 2


def test_old_configs_without_the_new_fields_keep_their_behaviour():
    cfg = TrainConfig.from_dict({"model": {"input_size": 64, "embed_dim": 32}})
    assert cfg.model.head == "mlp" and cfg.model.line_view is False and cfg.plain_nn is False
    assert TrainConfig().model.line_view is True and TrainConfig().model.head == "grid"
    assert TrainConfig().plain_nn is True


def test_linear_head_starts_at_the_principal_directions():
    # 2-d data with variance 9 along (1, 1)/sqrt2 and 1 along (1, -1)/sqrt2, two groups offset by
    # (10, 0) that the group centring removes: the first row is +-(1, 1)/sqrt2, sign made positive.
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4000, 1)) * 3
    b = rng.standard_normal((4000, 1))
    u, v = np.array([[1, 1]]) / 2 ** 0.5, np.array([[1, -1]]) / 2 ** 0.5
    x = torch.tensor(a * u + b * v, dtype=torch.float64)
    groups = torch.arange(4000) % 2
    x[groups == 1, 0] += 10
    head = torch.nn.Linear(2, 2).double()
    init_linear_head(head, x, groups)
    w = head.weight.detach().numpy()
    assert np.allclose(w[0], u[0], atol=0.02) and np.allclose(np.abs(w[1]), np.abs(v[0]), atol=0.02)
    assert w[0].max() > 0 and np.abs(w[1]).argmax() == np.argmax(w[1])
    assert np.allclose(head(x.mean(0, keepdim=True)).detach().numpy(), 0, atol=1e-9)  # bias centres
    # fewer samples than dimensions: directions without variance get zero weights, not noise
    head3 = torch.nn.Linear(5, 4).double()
    init_linear_head(head3, torch.tensor(rng.standard_normal((3, 5))), torch.zeros(3, dtype=torch.long))
    assert (head3.weight.abs().sum(1) > 0).sum() == 2  # 3 centred points span 2 directions


def _pca_cases():
    """Inputs that break a covariance eigendecomposition on some LAPACK builds: rank-deficient,
    byte-identical rows (emoji3 has hundreds of duplicated images), fewer images than dimensions,
    one image per domain, and all of it at the real feature width."""
    rng = np.random.default_rng(7)
    base = np.maximum(rng.standard_normal((3, 1280)), 0) * 6  # ReLU6-like pooled features
    yield "repeated rows", np.repeat(base, 8, axis=0), np.arange(24) % 2
    yield "fewer images than dimensions", rng.random((12, 1280)), np.arange(12) // 6
    yield "one image per domain", rng.random((2, 1280)), np.array([0, 1])
    dup = rng.random((40, 1280))
    dup[20:] = dup[:20]                                        # every image twice, across domains
    yield "duplicates across domains", dup, np.arange(40) // 20
    low = rng.standard_normal((300, 5)) @ rng.standard_normal((5, 1280))
    yield "rank 5 of 1280", low, np.arange(300) % 3


@pytest.mark.parametrize("name,x,groups", list(_pca_cases()), ids=[c[0] for c in _pca_cases()])
def test_principal_directions_are_finite_orthonormal_and_thread_independent(name, x, groups):
    from threadpoolctl import threadpool_limits

    from uem.train.model import principal_directions

    w, var = principal_directions(x, groups, 64)
    assert w.shape == (64, 1280) and np.all(np.isfinite(w)) and np.all(np.isfinite(var))
    live = np.abs(w).sum(1) > 0
    # centred within groups, the data spans at most N - (number of groups) directions
    assert live.sum() <= max(len(x) - len(np.unique(groups)), 0)
    np.testing.assert_allclose(w[live] @ w[live].T, np.eye(live.sum()), atol=1e-9)
    assert np.all(w[live][np.arange(live.sum()), np.abs(w[live]).argmax(1)] > 0)  # sign rule
    with threadpool_limits(limits=1):
        w1, var1 = principal_directions(x, groups, 64)
    np.testing.assert_allclose(w1, w, atol=1e-8)
    np.testing.assert_allclose(var1, var, rtol=1e-8, atol=1e-12)


def test_principal_directions_of_a_hand_made_case():
    # two groups, each the same 3 points shifted: centred, the points are (+-2, 0) and (0, 0) in
    # both groups -> one direction (1, 0) with variance (4 * 2 + 0) * 2 / (6 - 1) = 3.2
    pts = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 0.0]])
    x = np.concatenate([pts + [5, 5], pts - [1, 3]])
    from uem.train.model import principal_directions

    w, var = principal_directions(x, np.array([0, 0, 0, 1, 1, 1]), 2)
    np.testing.assert_allclose(w, [[1, 0], [0, 0]], atol=1e-12)
    np.testing.assert_allclose(var, [3.2, 0.0], atol=1e-12)


def test_linear_head_init_on_repeated_images_trains_from_finite_weights():
    rng = np.random.default_rng(3)
    x = torch.tensor(np.repeat(rng.random((4, 1280)), 6, axis=0))
    head = torch.nn.Linear(1280, 64).double()
    init_linear_head(head, x, torch.arange(24) % 2)
    assert torch.isfinite(head.weight).all() and torch.isfinite(head.bias).all()
    # each group holds the same 4 distinct images: centred, they span 3 directions
    assert int((head.weight.abs().sum(1) > 0).sum()) == 3
