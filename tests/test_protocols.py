import numpy as np
import pytest

from uem.eval.protocols import PROTOCOLS, half, random_half, split_categories

CATS = [f"cat{i:02d}" for i in range(98)]


def test_half_rounds_up():
    # 98 -> 49; an odd count keeps the larger half: 5 -> 3; a single category is kept, not dropped
    assert [half(n) for n in (0, 1, 2, 5, 98)] == [0, 1, 1, 3, 49]


def test_close_keeps_everything():
    s = split_categories(CATS, CATS[:90], "close", seed=3)
    assert s.query == tuple(CATS) and s.retrieval == tuple(CATS[:90])
    assert s.private == tuple(CATS[90:])   # categories R lacks by itself are private even in close


def test_partial_query_keeps_a_half_retrieval_keeps_all():
    s = split_categories(CATS, CATS, "partial", seed=0)
    assert len(s.query) == 49 and set(s.query) < set(CATS)
    assert s.retrieval == tuple(CATS) and s.private == ()


def test_open_retrieval_keeps_a_half_query_keeps_all():
    s = split_categories(CATS, CATS, "open", seed=0)
    assert s.query == tuple(CATS) and len(s.retrieval) == 49
    assert set(s.shared) == set(s.retrieval) and len(s.private) == 49
    assert set(s.shared).isdisjoint(s.private)


def test_deterministic_per_seed_and_order_independent():
    a = split_categories(CATS, CATS, "open", seed=7)
    b = split_categories(list(reversed(CATS)), CATS, "open", seed=7)
    assert a == b
    assert split_categories(CATS, CATS, "open", seed=8).retrieval != a.retrieval
    # the same seed drops the same categories in partial and open (one draw over the union)
    assert split_categories(CATS, CATS, "partial", seed=7).query == a.retrieval


def test_random_half_is_numpy_default_rng_permutation():
    # documented draw: default_rng(seed).permutation(n)[:ceil(n/2)] over the sorted categories
    pick = np.random.default_rng(5).permutation(5)[:3]
    assert random_half(["e", "a", "c", "b", "d"], 5) == sorted("abcde"[i] for i in pick)


def test_union_of_categories_is_the_universe():
    # R lacks "d": the half is drawn from {a, b, c, d}; R keeps the chosen ones it actually has
    s = split_categories(["a", "b", "c", "d"], ["a", "b", "c"], "open", seed=1)
    chosen = set(random_half(["a", "b", "c", "d"], 1))
    assert set(s.retrieval) == chosen - {"d"}
    assert set(s.private) == {"a", "b", "c", "d"} - set(s.retrieval)


def test_proportions_over_many_seeds():
    # every category is kept in about half of the seeds (no category is favoured)
    kept = np.zeros(len(CATS))
    for seed in range(200):
        s = split_categories(CATS, CATS, "open", seed)
        kept += np.isin(CATS, s.retrieval)
    assert np.all(kept / 200 > 0.3) and np.all(kept / 200 < 0.7)


def test_masks_and_dict():
    s = split_categories(["a", "b"], ["a", "b"], "partial", seed=0)
    cats = np.array(["a", "b", "a"])
    assert s.query_mask(cats).sum() == (cats == s.query[0]).sum()
    assert s.retrieval_mask(cats).all()
    d = s.to_dict()
    assert d["protocol"] == "partial" and d["query_categories"] == list(s.query)


def test_unknown_protocol():
    assert PROTOCOLS == ("close", "partial", "open")
    with pytest.raises(ValueError, match="protocol"):
        split_categories(CATS, CATS, "half-open")
