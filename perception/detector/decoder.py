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
        logits, values = [], []
        for keys, vals in segments:
            if keys.dim() == 3:
                n = keys.shape[1]
                kh = self.k(keys).reshape(b, n, h, dh).transpose(1, 2)  # (B, h, N, dh)
                values.append(self.v(vals).reshape(b, n, h, dh).transpose(1, 2))
                logits.append(qh @ kh.transpose(-1, -2))
            else:
                n = keys.shape[2]
                kh = self.k(keys).reshape(b, nq, n, h, dh).permute(0, 3, 1, 2, 4)  # (B, h, Q, N, dh)
                values.append(self.v(vals).reshape(b, nq, n, h, dh).permute(0, 3, 1, 2, 4))
                logits.append((qh[..., None, :] @ kh.transpose(-1, -2)).squeeze(-2))
        all_logits = torch.cat(logits, dim=-1) if len(logits) > 1 else logits[0]
        if bias is not None:
            all_logits = all_logits + bias
        attn = torch.softmax(all_logits, dim=-1)
        out = None
        offset = 0
        for vh in values:
            n = vh.shape[-2]
            a = attn[..., offset:offset + n]
            offset += n
            part = a @ vh if vh.dim() == 4 else (a[..., None, :] @ vh).squeeze(-2)
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
