import pytest
import torch

from uem.train.backbone import EfficientNetLite0, pretrained_weights_path


def test_pretrained_state_dict_loads_with_no_missing_or_unexpected_keys():
    state = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
    result = EfficientNetLite0().load_state_dict(state, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []


def test_matches_the_reference_implementation():
    ref_mod = pytest.importorskip("efficientnet_lite_pytorch")
    from uem.train.backbone import load_pretrained

    torch.manual_seed(0)
    ours = load_pretrained().eval()
    ref = ref_mod.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(pretrained_weights_path())).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(ours.features(x), ref.extract_features(x), atol=1e-5)
        assert torch.allclose(ours.classify(x), ref(x), atol=1e-4)
