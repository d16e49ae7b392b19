"""Attention numerics against a direct, loop-per-head computation of the BEiT / ViT formulas."""

import torch

from tinyusfm_monai.networks.vit import Attention, Block, relative_position_index


def naive_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    b, n, c = x.shape
    w = attn.qkv.weight
    if attn.q_bias is not None:
        bias = torch.cat([attn.q_bias, torch.zeros_like(attn.q_bias), attn.v_bias])
    else:
        bias = attn.qkv.bias
    qkv = x @ w.T + bias
    q, k, v = qkv[..., :c], qkv[..., c : 2 * c], qkv[..., 2 * c :]
    d = c // attn.num_heads
    heads = []
    for h in range(attn.num_heads):
        qh, kh, vh = (t[..., h * d : (h + 1) * d] for t in (q, k, v))
        logits = qh @ kh.transpose(-1, -2) / d**0.5
        if attn.relative_position_bias_table is not None:
            table, index = attn.relative_position_bias_table, attn.relative_position_index
            logits = logits + table[:, h][index]
        heads.append(torch.softmax(logits, -1) @ vh)
    return torch.cat(heads, -1) @ attn.proj.weight.T + attn.proj.bias


def test_relative_position_index_matches_offsets():
    idx = relative_position_index((3, 4))
    n = 12
    assert idx.shape == (n + 1, n + 1)
    num_rel = (2 * 3 - 1) * (2 * 4 - 1) + 3
    assert idx[0, 0] == num_rel - 1 and idx[0, 5] == num_rel - 3 and idx[5, 0] == num_rel - 2
    # patch (r, c) is token 1 + r*4 + c; equal offsets share a table row, different ones do not
    tok = lambda r, c: 1 + r * 4 + c  # noqa: E731
    assert idx[tok(0, 0), tok(1, 2)] == idx[tok(1, 1), tok(2, 3)]
    assert idx[tok(0, 0), tok(1, 2)] != idx[tok(1, 2), tok(0, 0)]
    assert idx[1:, 1:].max() < num_rel - 3 and idx[1:, 1:].min() >= 0
    assert idx[1:, 1:].unique().numel() == (2 * 3 - 1) * (2 * 4 - 1)


def test_usfm_attention_qv_bias_and_relative_bias():
    torch.manual_seed(1)
    attn = Attention(48, 4, qv_bias=True, window=(3, 3)).eval()
    with torch.no_grad():
        attn.q_bias.normal_()
        attn.v_bias.normal_()
        attn.relative_position_bias_table.normal_()
    assert attn.qkv.bias is None  # no key bias
    x = torch.randn(2, 10, 48)
    out, _ = attn(x)
    torch.testing.assert_close(out, naive_attention(attn, x), rtol=1e-5, atol=1e-5)
    out_w, weights = attn(x, need_weights=True)
    torch.testing.assert_close(out_w, out, rtol=1e-5, atol=1e-5)
    assert weights.shape == (2, 4, 10, 10)


def test_key_bias_has_no_effect_under_softmax_so_usfm_omits_it():
    """Why BEiT drops the key bias: it shifts every logit of a query row equally."""
    torch.manual_seed(2)
    attn = Attention(32, 4, qv_bias=False).eval()
    x = torch.randn(1, 6, 32)
    ref, _ = attn(x)
    with torch.no_grad():
        attn.qkv.bias[32:64].normal_()
    torch.testing.assert_close(attn(x)[0], ref, rtol=1e-5, atol=1e-5)


def test_tinyusfm_attention_scale_and_qkv_bias():
    torch.manual_seed(3)
    attn = Attention(48, 12).eval()
    with torch.no_grad():
        attn.qkv.bias.normal_()
    assert attn.scale == (48 // 12) ** -0.5
    x = torch.randn(2, 7, 48)
    torch.testing.assert_close(attn(x)[0], naive_attention(attn, x), rtol=1e-5, atol=1e-5)


def test_layer_scale_block():
    torch.manual_seed(4)
    blk = Block(32, 4, qv_bias=True, window=(2, 2), init_values=0.1).eval()
    with torch.no_grad():
        blk.gamma_1.uniform_(0, 1)
        blk.gamma_2.uniform_(0, 1)
    x = torch.randn(1, 5, 32)
    y = x + blk.gamma_1 * naive_attention(blk.attn, blk.norm1(x))
    y = y + blk.gamma_2 * blk.mlp(blk.norm2(y))
    torch.testing.assert_close(blk(x)[0], y, rtol=1e-5, atol=1e-5)
    assert torch.all(Block(32, 4, init_values=0.1).gamma_1 == 0.1)
    assert Block(32, 4).gamma_1 is None
