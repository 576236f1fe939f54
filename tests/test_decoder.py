"""Decoder attention: folding the projections into the query must not change what attention computes."""

from __future__ import annotations

import math

import torch

from perception.detector.decoder import Attention


def _reference(attn: Attention, q: torch.Tensor, segments: list[tuple[torch.Tensor, torch.Tensor]],
               bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Textbook multi-head attention: project every key and value, one softmax over all segments."""
    b, nq, d = q.shape
    h, dh = attn.h, attn.dh
    qh = attn.q(q).reshape(b, nq, h, dh).transpose(1, 2) / math.sqrt(dh)  # (B, h, Q, dh)
    logits, values = [], []
    for keys, vals in segments:
        if keys.dim() == 3:  # shared: broadcast to every query
            keys, vals = keys[:, None].expand(-1, nq, -1, -1), vals[:, None].expand(-1, nq, -1, -1)
        n = keys.shape[2]
        kh = attn.k(keys).reshape(b, nq, n, h, dh).permute(0, 3, 1, 2, 4)  # (B, h, Q, N, dh)
        values.append(attn.v(vals).reshape(b, nq, n, h, dh).permute(0, 3, 1, 2, 4))
        logits.append((qh[..., None, :] * kh).sum(-1))
    weights = torch.softmax(torch.cat(logits, -1) + bias, -1)
    out = (weights[..., None] * torch.cat(values, 3)).sum(3)  # (B, h, Q, dh)
    return attn.o(out.transpose(1, 2).reshape(b, nq, d)), weights


def test_folded_attention_equals_projected_attention() -> None:
    torch.manual_seed(0)
    attn = Attention(32, 4).double()
    b, nq, k, n = 2, 5, 9, 7
    q = torch.randn(b, nq, 32, dtype=torch.double)
    window = torch.randn(b, nq, k, 32, dtype=torch.double)
    window_pos = torch.randn(k, 32, dtype=torch.double)  # shared by every query, as on cell centres
    shared = torch.randn(b, n, 32, dtype=torch.double)
    bias = torch.randn(b, 4, nq, k + n, dtype=torch.double)
    bias[..., 0] = -1.0e4  # a hidden key
    segments = [(window + window_pos, window), (shared + 0.5, shared)]
    out, weights = attn(q, segments, bias)
    ref_out, ref_weights = _reference(attn, q, segments, bias)
    assert weights.shape == (b, 4, nq, k + n)
    torch.testing.assert_close(weights, ref_weights, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    assert float(weights[..., 0].max()) < 1e-100
    # Gradients reach the key and value projections through the folded form as well.
    out.sum().backward()
    assert attn.k.weight.grad is not None and float(attn.k.weight.grad.abs().sum()) > 0
    assert attn.v.bias.grad is not None and float(attn.v.bias.grad.abs().sum()) > 0
