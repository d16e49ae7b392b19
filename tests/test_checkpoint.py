"""load_pretrained: every official layout loads to the same model; anything else is refused clearly."""

import pytest
import torch
from safetensors.torch import save_file

from tinyusfm_monai.networks import USFM, CheckpointError, TinyUSFM, ViTSegmenter, load_pretrained, save_official
from tinyusfm_monai.networks.checkpoint import interpolate_pos_embed, interpolate_rel_pos_table
from tinyusfm_monai.networks.vit import relative_position_index


def official_state(shapes: dict, head_classes: int = 0) -> dict:
    """A checkpoint with exactly the official keys and shapes, filled with random values."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("relative_position_index"):
            state[key] = relative_position_index((14, 14))
        else:
            state[key] = torch.randn(shape, generator=g) * 0.02
    if head_classes:
        dim = shapes["cls_token"][-1]
        state["head.weight"] = torch.randn(head_classes, dim, generator=g)
        state["head.bias"] = torch.randn(head_classes, generator=g)
    return state


def layouts(state: dict):
    yield "bare", state
    yield "model-key", {"model": state, "epoch": 399}
    yield "state_dict-key", {"state_dict": state}
    for prefix in ("model.", "module.", "module.model."):
        yield f"prefix-{prefix}", {prefix + k: v for k, v in state.items()}
    yield "model-key+prefix", {"model": {"module." + k: v for k, v in state.items()}}


@pytest.mark.parametrize("cls,name,head", [(TinyUSFM, "tinyusfm", 0), (TinyUSFM, "tinyusfm", 4), (USFM, "usfm", 0)])
def test_every_layout_gives_the_same_model(tmp_path, manifest, cls, name, head):
    state = official_state(manifest(name), head_classes=head)
    files = []
    for layout, obj in layouts(state):
        files.append(tmp_path / f"{layout}.pth")
        torch.save(obj, files[-1])
    files.append(tmp_path / "ckpt.safetensors")
    save_file({k: v.contiguous() for k, v in state.items()}, str(files[-1]))
    model = cls(num_classes=0).eval()
    x = torch.randn(1, 3, 224, 224)
    ref_out = None
    for i, path in enumerate(files):
        with torch.no_grad():  # scramble, so every load has to bring all weights back
            for p in model.parameters():
                p.normal_()
        report = load_pretrained(model, path)
        assert len(report.loaded) == len(state) - (2 if head else 0), path.name
        loaded = model.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in state.items() if not k.startswith("head")), path.name
        if i in (0, len(files) - 1):  # identical weights give identical outputs; check two layouts end to end
            with torch.no_grad():
                out = model(x)
            if ref_out is None:
                ref_out = out
            assert torch.equal(out, ref_out), path.name


def test_head_is_loaded_when_it_fits_and_skipped_when_not(tmp_path, manifest):
    state = official_state(manifest("tinyusfm"), head_classes=3)
    path = tmp_path / "cls.pth"
    torch.save(state, path)
    fits = TinyUSFM(num_classes=3)
    load_pretrained(fits, path)
    assert torch.equal(fits.head.weight, state["head.weight"])
    other = TinyUSFM(num_classes=5)
    report = load_pretrained(other, path)
    assert "head.weight" in report.skipped and "task head" in report.skipped["head.weight"]
    no_head = tmp_path / "nohead.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("head")}, no_head)
    report = load_pretrained(TinyUSFM(num_classes=3), no_head)
    assert report.initialised == ["head"]


def test_one_wrong_shape_is_refused_with_file_and_key(tmp_path, manifest):
    state = official_state(manifest("tinyusfm"))
    state["blocks.3.mlp.fc1.weight"] = torch.zeros(700, 192)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as e:
        load_pretrained(TinyUSFM(), path)
    msg = str(e.value)
    assert str(path) in msg and "blocks.3.mlp.fc1.weight" in msg and "(700, 192)" in msg and "\n" not in msg


def test_other_architecture_is_named(tmp_path, manifest):
    path = tmp_path / "usfm.pth"
    torch.save(official_state(manifest("usfm")), path)
    with pytest.raises(CheckpointError, match="looks like USFM.*model is TinyUSFM"):
        load_pretrained(TinyUSFM(), path)
    path2 = tmp_path / "tiny.pth"
    torch.save(official_state(manifest("tinyusfm")), path2)
    with pytest.raises(CheckpointError, match=str(path2)):
        load_pretrained(USFM(), path2)


def test_missing_keys_are_refused(tmp_path, manifest):
    state = official_state(manifest("tinyusfm"))
    del state["blocks.11.norm2.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="missing 1 backbone tensors .*blocks.11.norm2.weight"):
        load_pretrained(TinyUSFM(), path)


def test_missing_truncated_and_pickled_files(tmp_path, manifest):
    with pytest.raises(CheckpointError, match="not found"):
        load_pretrained(TinyUSFM(), tmp_path / "nope.pth")
    good = tmp_path / "good.pth"
    torch.save(official_state(manifest("tinyusfm")), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="truncated.pth: truncated or not a PyTorch checkpoint"):
        load_pretrained(TinyUSFM(), truncated)
    pickled = tmp_path / "code.pth"
    torch.save({"model": official_state(manifest("tinyusfm")), "args": _Custom()}, pickled)
    with pytest.raises(CheckpointError, match="code.pth: refused, the file needs code unpickling"):
        load_pretrained(TinyUSFM(), pickled)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="garbage.safetensors"):
        load_pretrained(TinyUSFM(), garbage)


class _Custom:
    pass


def test_interpolation_is_identity_at_the_native_size_and_resizes_otherwise(tmp_path, manifest):
    state = official_state(manifest("tinyusfm"))
    torch.testing.assert_close(interpolate_pos_embed(state["pos_embed"], (14, 14)), state["pos_embed"])
    path = tmp_path / "tiny.pth"
    torch.save(state, path)
    model = TinyUSFM(img_size=256)
    report = load_pretrained(model, path)
    assert model.pos_embed.shape == (1, 257, 192)
    assert report.interpolated and "pos_embed" in report.interpolated[0]
    assert torch.equal(model.pos_embed[:, 0], state["pos_embed"][:, 0])  # cls position kept

    ustate = official_state(manifest("usfm"))
    table = ustate["blocks.0.attn.relative_position_bias_table"]
    torch.testing.assert_close(interpolate_rel_pos_table(table, (14, 14)), table)
    upath = tmp_path / "usfm.pth"
    torch.save(ustate, upath)
    umodel = USFM(img_size=256).eval()
    report = load_pretrained(umodel, upath)
    assert umodel.blocks[0].attn.relative_position_bias_table.shape == (31 * 31 + 3, 12)
    assert torch.equal(umodel.blocks[0].attn.relative_position_bias_table[-3:], table[-3:])
    assert umodel(torch.randn(1, 3, 256, 256)).shape == (1, 768)


def test_segmenter_backbone_and_round_trip_through_official_layout(tmp_path, manifest):
    path = tmp_path / "tiny.pth"
    state = official_state(manifest("tinyusfm"))
    torch.save({"model": state}, path)
    seg = ViTSegmenter("tinyusfm", num_classes=2)
    load_pretrained(seg, path)
    assert torch.equal(seg.backbone.pos_embed, state["pos_embed"])
    out = save_official(seg, tmp_path / "export.pth")
    exported = torch.load(out, weights_only=True)
    assert set(exported) == set(manifest("tinyusfm"))
    assert all(torch.equal(exported[k], state[k]) for k in state)


def test_text_files_and_non_finite_weights_are_refused_with_file_and_cause(tmp_path, manifest):
    """A text file saved as .pth (an HTML error page, a git-lfs pointer) gave a raw KeyError; NaN/inf weights
    from a diverged run loaded silently. Both are a CheckpointError naming the file and the cause, also when a
    bundle loads its models/model.pt."""
    from tinyusfm_monai.handlers.weights import TrainedWeightsLoader

    text = tmp_path / "pointer.pth"
    text.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 22000000\n")
    with pytest.raises(CheckpointError, match=r"pointer.pth: not a PyTorch checkpoint \(a text file"):
        load_pretrained(TinyUSFM(), text)
    state = official_state(manifest("tinyusfm"))
    state["blocks.3.attn.qkv.weight"][0, 0] = float("nan")
    state["pos_embed"][0, 1, 1] = float("inf")
    broken = tmp_path / "diverged.pth"
    torch.save(state, broken)
    with pytest.raises(CheckpointError, match=r"diverged.pth: tensor .* and 1 more contains NaN or infinity"):
        load_pretrained(TinyUSFM(), broken)
    loader = TrainedWeightsLoader(str(text), TinyUSFM())
    with pytest.raises(CheckpointError, match="pointer.pth: not a PyTorch checkpoint"):
        loader.load()
    with pytest.raises(CheckpointError, match="diverged.pth"):
        TrainedWeightsLoader(str(broken), TinyUSFM()).load()
