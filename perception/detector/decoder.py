"""TransFusion-style decoder: queries from BEV heatmap peaks, BEV cross-attention, then joint
BEV + image cross-attention guided by each query's projection into the camera.

Attention is written out (no ``nn.MultiheadAttention``) so the weights per layer and head are
returned for the explanation layer and the graph exports to ONNX as plain MatMul/Softmax.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: Additive bias that hides a key from attention (finite, so fully hidden rows never give NaN).
MASKED = -1.0e4


class Attention(nn.Module):
    """Multi-head attention over one or more key segments, returning its weights.

    Each segment is ``(keys, values)``, either shared by all queries, (B, N, d), or a memory of
    each query's own, (B, Q, N, d) (local windows). One softmax runs over the concatenated
    segments, so the weights (B, heads, Q, sum N) say how attention splits between them.

    A per-query memory is never projected: the key projection is folded into the query
    (``q·(W_k m + b_k) = (W_kᵀ q)·m + q·b_k``) and the value projection applied after the
    weighted sum (``Σ a (W_v m + b_v) = W_v (Σ a m) + b_v Σ a``). Same function and weights as
    projecting every window cell, at a fraction of the work and without 5-D transposes.
    """

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.h, self.dh = num_heads, d_model // num_heads
        self.q, self.k, self.v = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.o = nn.Linear(d_model, d_model)

    def forward(self, q: torch.Tensor, segments: list[tuple[torch.Tensor, torch.Tensor]],
                bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """q (B, Q, d); segments of (keys, values); bias broadcastable to (B, heads, Q, sum N)."""
        b, nq, d = q.shape
        h, dh = self.h, self.dh
        qh = self.q(q).reshape(b, nq, h, dh).transpose(1, 2) * (1.0 / math.sqrt(dh))  # (B, h, Q, dh)
        w_k, w_v = self.k.weight.reshape(h, dh, d), self.v.weight.reshape(h, dh, d)
        logits, values = [], []
        for keys, vals in segments:
            if keys.dim() == 3:
                n = keys.shape[1]
                kh = self.k(keys).reshape(b, n, h, dh).transpose(1, 2)  # (B, h, N, dh)
                values.append((True, self.v(vals).reshape(b, n, h, dh).transpose(1, 2)))
                logits.append(qh @ kh.transpose(-1, -2))
            else:
                q_in = (qh @ w_k).transpose(1, 2)  # (B, Q, h, d): query in the keys' input space
                q_bias = (qh * self.k.bias.reshape(h, 1, dh)).sum(-1, keepdim=True)  # (B, h, Q, 1)
                logits.append((q_in @ keys.transpose(-1, -2)).transpose(1, 2) + q_bias)  # (B, h, Q, N)
                values.append((False, vals))
        all_logits = torch.cat(logits, dim=-1) if len(logits) > 1 else logits[0]
        if bias is not None:
            all_logits = all_logits + bias
        attn = torch.softmax(all_logits, dim=-1)
        out = None
        offset = 0
        for projected, vals in values:
            n = vals.shape[-2]
            a = attn[..., offset:offset + n]
            offset += n
            if projected:  # shared values (B, h, N, dh)
                part = a @ vals
            else:  # raw per-query memory (B, Q, N, d)
                context = (a.transpose(1, 2) @ vals).transpose(1, 2)  # (B, h, Q, d)
                part = context @ w_v.transpose(-1, -2) + a.sum(-1, keepdim=True) * self.v.bias.reshape(h, 1, dh)
            out = part if out is None else out + part
        assert out is not None
        return self.o(out.transpose(1, 2).reshape(b, nq, d)), attn


class FeedForward(nn.Module):
    """Two-layer MLP with ReLU."""

    def __init__(self, d_model: int, hidden: int, out: int | None = None) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out or d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the MLP."""
        return self.net(x)


class DecoderLayer(nn.Module):
    """Self-attention among queries, cross-attention to memory segments, feed-forward (post-norm)."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.self_attn = Attention(d_model, num_heads)
        self.cross_attn = Attention(d_model, num_heads)
        self.ffn = FeedForward(d_model, ffn_dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)

    def forward(self, query: torch.Tensor, query_pos: torch.Tensor,
                memory: list[tuple[torch.Tensor, torch.Tensor]],
                bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """query/query_pos (B, Q, d); memory: (tokens, positional embedding) segments, shared (B, N, d) or
        per query (B, Q, N, d). Returns updated queries and the cross-attention weights (B, heads, Q, sum N)."""
        q = query + query_pos
        x, _ = self.self_attn(q, [(q, query)])
        query = self.norm1(query + x)
        x, attn = self.cross_attn(query, [(mem + pos, mem) for mem, pos in memory], bias)
        query = self.norm2(query + x)
        query = self.norm3(query + self.ffn(query))
        return query, attn


def gaussian_bias(dist2: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """Locality prior ``-d^2 / (2 sigma_h^2)`` per head: dist2 (B, Q, N), log_sigma (heads,) → (B, heads, Q, N)."""
    inv = 0.5 * torch.exp(-2.0 * log_sigma).view(1, -1, 1, 1)
    return -dist2[:, None] * inv
