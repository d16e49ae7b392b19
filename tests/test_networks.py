"""The two backbones have exactly the official layout and the output contract of the checkpoint loaders."""

import pytest
import torch

from tinyusfm_monai.networks import USFM, TinyUSFM, ViTSegmenter


@pytest.mark.parametrize("cls,name", [(TinyUSFM, "tinyusfm"), (USFM, "usfm")])
def test_state_dict_matches_official_manifest(cls, name, manifest):
    ref = manifest(name)
    own = {k: list(v.shape) for k, v in cls(num_classes=0).state_dict().items()}
    assert own == ref


def test_tinyusfm_parameter_count():
    assert sum(p.numel() for p in TinyUSFM(num_classes=0).parameters()) == 5_524_416


@pytest.mark.parametrize("cls,dim", [(TinyUSFM, 192), (USFM, 768)])
def test_num_classes_zero_returns_pooled_feature(cls, dim):
    model = cls(num_classes=0, img_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    feat = model(x)
    assert feat.shape == (2, dim)
    tokens, _, _ = model.forward_features(x, [], [])
    # fc_norm(mean of patch tokens), cls token excluded
    expected = torch.nn.functional.layer_norm(
        tokens[:, 1:].mean(1), (dim,), model.fc_norm.weight, model.fc_norm.bias, eps=1e-6
    )
    torch.testing.assert_close(feat, expected)
    torch.testing.assert_close(model.pool(torch.cat([100 + tokens[:, :1], tokens[:, 1:]], 1)), feat)


def test_head_on_top_of_pooled_feature():
    model = TinyUSFM(num_classes=5, img_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    logits = model(x)
    assert logits.shape == (2, 5)
    tokens, _, _ = model.forward_features(x, [], [])
    torch.testing.assert_close(logits, model.head(model.pool(tokens)))


@pytest.mark.parametrize("cls", [TinyUSFM, USFM])
def test_intermediate_tokens_and_attention_come_from_the_same_pass(cls):
    model = cls(num_classes=0, img_size=64).eval()
    x = torch.randn(1, 3, 64, 64)
    seen = {}
    hooks = [
        b.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, o[0])) for k, b in enumerate(model.blocks)
    ]
    final, tokens, attns = model.forward_features(x, [3, 11], [0, 11])
    for h in hooks:
        h.remove()
    torch.testing.assert_close(tokens[0], seen[3])
    torch.testing.assert_close(tokens[1], seen[11])
    torch.testing.assert_close(final, seen[11])
    assert len(attns) == 2 and attns[0].shape == (1, 12, 17, 17)
    torch.testing.assert_close(attns[1].sum(-1), torch.ones(1, 12, 17))
    # asking for attention maps must not change the result (SDPA path vs explicit path)
    plain, _, _ = model.forward_features(x, [], [])
    torch.testing.assert_close(plain, final, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backbone", ["tinyusfm", "usfm"])
def test_segmenter_logits_at_input_size(backbone):
    model = ViTSegmenter(backbone, num_classes=3, img_size=64).eval()
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 3, 64, 64)


def test_segmenter_uses_blocks_4_6_8_12():
    model = ViTSegmenter("tinyusfm", num_classes=2, img_size=64).eval()
    assert model.out_indices == [3, 5, 7, 11]
    # blocks after the 12th do not exist, and changing block 12 must change the output
    x = torch.randn(1, 3, 64, 64)
    before = model(x)
    with torch.no_grad():
        model.backbone.blocks[11].mlp.fc2.bias.add_(1.0)
    assert not torch.allclose(before, model(x))


@pytest.mark.parametrize(
    "make",
    [
        lambda: TinyUSFM(num_classes=3, img_size=64),
        lambda: USFM(img_size=64),
        lambda: ViTSegmenter("tinyusfm", num_classes=2, img_size=64),
        lambda: ViTSegmenter("tinyusfm", num_classes=2, img_size=64, decoder="official"),
    ],
)
def test_torchscript_matches_eager(make):
    model = make().eval()
    x = torch.randn(1, 3, 64, 64)
    scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(x), model(x))


def test_every_trainable_segmenter_parameter_gets_a_gradient():
    """DistributedDataParallel stops on a trainable parameter that a loss never reaches (multi_gpu_train.json)."""
    net = ViTSegmenter("tinyusfm", num_classes=2, img_size=64)
    net(torch.randn(2, 3, 64, 64)).sum().backward()
    assert [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None] == []
    assert "backbone.fc_norm.weight" in net.state_dict()  # kept for the official checkpoints, frozen
