"""The fusion network: LiDAR pillars + camera → heatmap, queries, boxes with variances, attention."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from perception.detector.camera import ImageEncoder
from perception.detector.config import ModelConfig
from perception.detector.decoder import MASKED, DecoderLayer, FeedForward, gaussian_bias
from perception.detector.lidar import BEVBackbone, PillarFeatureNet, scatter_to_bev

#: Mean object size (l, w, h) and box-centre height in the LiDAR frame per class (KITTI statistics,
#: LiDAR 1.73 m above the road); the heads predict residuals to these priors.
CLASS_PRIORS: dict[str, tuple[float, float, float, float]] = {
    "Car": (3.9, 1.6, 1.56, -0.95),
    "Pedestrian": (0.8, 0.6, 1.73, -0.87),
    "Cyclist": (1.76, 0.6, 1.73, -0.87),
}
_DEFAULT_PRIOR = (1.0, 1.0, 1.5, -0.9)
#: Side of the square window of BEV cells each query attends to.
BEV_WINDOW = 9
#: Box parameters that get a predicted log-variance, in this order.
BOX_PARAMS = ("x", "y", "z", "l", "w", "h", "yaw")
NUM_LAYERS = 2


class NetOutput(NamedTuple):
    """Raw network outputs (tensors only; decoding to Detections happens in post-processing)."""

    heatmap: torch.Tensor  # (B, C, Hb, Wb) class heatmap logits
    query_ref: torch.Tensor  # (B, Q, 2) x, y of the heatmap peaks the queries start at (m)
    query_class: torch.Tensor  # (B, Q) class of each peak
    logits: torch.Tensor  # (L, B, Q, C) class logits per decoder layer
    boxes: torch.Tensor  # (L, B, Q, 8) x, y, z, log l, log w, log h, sin yaw, cos yaw
    logvar: torch.Tensor  # (L, B, Q, 7) log-variance of x y z, log l w h, yaw
    attn_bev: torch.Tensor  # (L, B, heads, Q, K) attention over each query's window of BEV cells
    attn_bev_index: torch.Tensor  # (L, B, Q, K) flat BEV cell index (iy * Wb + ix) of each window entry
    attn_image: torch.Tensor  # (B, heads, Q, Nimg) attention over image feature cells (fusion layer)
    camera_share: torch.Tensor  # (B, Q) share of fusion-layer attention mass on the camera
    query_features: torch.Tensor  # (B, Q, d) final query embeddings
    frame_embedding: torch.Tensor  # (B, cfg.embedding_dim) pooled BEV, then image features (mean, max)


class FusionNet(nn.Module):
    """LiDAR–camera fusion detector (pure PyTorch, ONNX-exportable)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, c = cfg.d_model, len(cfg.classes)
        self.pfn = PillarFeatureNet(cfg.pillar_channels)
        self.backbone = BEVBackbone(cfg)
        self.heatmap_head = nn.Sequential(
            nn.Conv2d(cfg.bev_channels, 32, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(32, c, 1))
        nn.init.constant_(self.heatmap_head[-1].bias, -2.19)
        self.bev_proj = nn.Conv2d(cfg.bev_channels, d, 1)
        self.image_encoder = ImageEncoder(cfg)
        self.image_proj = nn.Conv2d(cfg.image_channels[-1], d, 1)
        self.class_embed = nn.Embedding(c, d)
        self.bev_pos = FeedForward(2, d, d)  # position relative to the query, in window units
        self.image_pos = FeedForward(2, d, d)
        self.layers = nn.ModuleList([DecoderLayer(d, cfg.num_heads, cfg.ffn_dim) for _ in range(NUM_LAYERS)])
        self.heads = nn.ModuleList([FeedForward(d, d, c + 8 + 7) for _ in range(NUM_LAYERS)])
        for head in self.heads:
            nn.init.constant_(head.net[-1].bias[:c], -2.19)
            nn.init.zeros_(head.net[-1].bias[c:])
            head.net[-1].bias.data[c + 7] = 1.0  # cos yaw
        h = cfg.num_heads
        # Multi-scale locality priors, one width per head: metres on the BEV, feature pixels on the image.
        scales = torch.tensor([2.0 ** i for i in range(h)])
        self.log_sigma_bev = nn.Parameter(torch.log(0.75 * scales))
        self.log_sigma_bev2 = nn.Parameter(torch.log(0.5 * scales))
        self.log_sigma_image = nn.Parameter(torch.log(1.0 * scales))
        priors = torch.tensor([CLASS_PRIORS.get(n, _DEFAULT_PRIOR) for n in cfg.classes])
        self.register_buffer("log_size_prior", torch.log(priors[:, :3]), persistent=False)
        self.register_buffer("z_prior", priors[:, 3].clone(), persistent=False)
        hb, wb = cfg.bev_shape
        r, stride = cfg.point_range, cfg.bev_stride
        cell = (r[3] - r[0]) / wb
        ys, xs = torch.meshgrid(torch.arange(hb), torch.arange(wb), indexing="ij")
        bev_xy = torch.stack([r[0] + (xs + 0.5) * cell, r[1] + (ys + 0.5) * cell], -1).reshape(-1, 2).float()
        self.register_buffer("bev_xy", bev_xy, persistent=False)
        self.register_buffer("bev_origin", torch.tensor([r[0], r[1]]), persistent=False)
        self.bev_cell = cell
        half = BEV_WINDOW // 2
        oy, ox = torch.meshgrid(torch.arange(-half, half + 1), torch.arange(-half, half + 1), indexing="ij")
        self.register_buffer("window_offsets", torch.stack([oy.reshape(-1), ox.reshape(-1)], -1), persistent=False)
        hi, wi = cfg.image_feature_shape
        vs, us = torch.meshgrid(torch.arange(hi), torch.arange(wi), indexing="ij")
        image_uv = torch.stack([us + 0.5, vs + 0.5], -1).reshape(-1, 2).float()
        self.register_buffer("image_uv", image_uv, persistent=False)
        self.register_buffer("image_wh", torch.tensor([float(wi), float(hi)]), persistent=False)
        del stride

    def _bev_window(self, tokens: torch.Tensor, ref: torch.Tensor, log_sigma: torch.Tensor, on_cells: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gather each query's BEV_WINDOW² cells around ``ref`` (B, Q, 2).

        Returns memory (B, Q, K, d), relative positional embedding (B, Q, K, d), or (K, d) shared by all
        queries when ``on_cells`` says every ``ref`` is a cell centre, attention bias (B, heads, Q, K)
        (Gaussian locality, cells off the grid hidden) and flat cell indices (B, Q, K).
        """
        bsz, nq, _ = ref.shape
        hb, wb = self.cfg.bev_shape
        cell = torch.floor((ref - self.bev_origin) / self.bev_cell).long()  # (B, Q, 2) as (ix, iy)
        iy = cell[..., 1:2] + self.window_offsets[:, 0]
        ix = cell[..., 0:1] + self.window_offsets[:, 1]
        inside = (iy >= 0) & (iy < hb) & (ix >= 0) & (ix < wb)
        index = iy.clamp(0, hb - 1) * wb + ix.clamp(0, wb - 1)  # (B, Q, K)
        n = hb * wb
        batch = torch.arange(bsz, device=ref.device).view(bsz, 1, 1) * n
        memory = tokens.reshape(bsz * n, -1)[index + batch]
        # Window cells off the grid are clamped to the border; their offsets do not matter, they are hidden.
        rel = self.window_offsets.flip(-1).to(ref.dtype) * self.bev_cell if on_cells else \
            self.bev_xy[index] - ref[:, :, None, :]
        pos = self.bev_pos(rel / (self.bev_cell * BEV_WINDOW))
        dist2 = (rel ** 2).sum(-1)
        bias = gaussian_bias(dist2.expand(bsz, nq, -1), log_sigma) + torch.where(inside, 0.0, MASKED)[:, None]
        return memory, pos, bias, index

    def _decode(self, raw: torch.Tensor, ref: torch.Tensor, cls: torch.Tensor) -> tuple[torch.Tensor, ...]:
        c = len(self.cfg.classes)
        logits, reg, logvar = raw[..., :c], raw[..., c:c + 8], raw[..., c + 8:]
        xy = ref + reg[..., 0:2]
        z = reg[..., 2:3] + self.z_prior[cls][..., None]
        log_size = reg[..., 3:6] + self.log_size_prior[cls]
        sc = reg[..., 6:8]
        box = torch.cat([xy, z, log_size, sc], dim=-1)
        return logits, box, logvar.clamp(-10.0, 6.0)

    def forward(self, pillar_features: torch.Tensor, num_points: torch.Tensor, coords: torch.Tensor,
                image: torch.Tensor, lidar2img: torch.Tensor, camera_valid: torch.Tensor,
                bev_valid: torch.Tensor | None = None) -> NetOutput:
        """Run the network.

        pillar_features (P, M, 9), num_points (P,), coords (P, 3) ``(batch, iy, ix)``,
        image (B, 3, h, w) RGB in [0, 1], lidar2img (B, 3, 4) LiDAR → image-feature pixels,
        camera_valid (B,) 1.0 when the image is real, bev_valid (B,) 1.0 unless LiDAR tokens are hidden
        from the fusion layer (training-time modality dropout).
        """
        cfg = self.cfg
        bsz = image.shape[0]
        nx, ny = cfg.grid_size
        pillars = self.pfn(pillar_features, num_points)
        canvas = scatter_to_bev(pillars, coords, bsz, nx, ny)
        bev = self.backbone(canvas)
        heatmap = self.heatmap_head(bev)
        hb, wb = heatmap.shape[-2:]
        n_bev = hb * wb

        # Queries at heatmap peaks (3x3 max-pool NMS), class-aware top-k.
        with torch.no_grad():
            hm = torch.sigmoid(heatmap)
            peaks = hm * (hm == F.max_pool2d(hm, 3, 1, 1)).to(hm.dtype)
            _, idx = peaks.reshape(bsz, -1).topk(cfg.num_queries, dim=1)
            query_class = torch.div(idx, n_bev, rounding_mode="floor")
            cell = idx - query_class * n_bev
        bev_tokens = self.bev_proj(bev).flatten(2).transpose(1, 2)  # (B, Nbev, d)
        d = bev_tokens.shape[-1]
        query = torch.gather(bev_tokens, 1, cell[..., None].expand(-1, -1, d)) + self.class_embed(query_class)
        ref = self.bev_xy[cell]  # (B, Q, 2)
        zero_pos = torch.zeros_like(query)

        img = self.image_proj(self.image_encoder(image)).flatten(2).transpose(1, 2)  # (B, Nimg, d)
        img_pos = self.image_pos(self.image_uv / self.image_wh)  # (Nimg, d)
        n_img = img.shape[1]
        # What the frame looks like to both encoders, for frame-level OOD scoring: the BEV part sees weather
        # and beam patterns, the image part night and glare (a BEV-only embedding cannot tell night from day).
        frame_embedding = torch.cat([bev.mean(dim=(2, 3)), bev.amax(dim=(2, 3)), img.mean(dim=1), img.amax(dim=1)],
                                    dim=1)

        logits_all, boxes_all, logvar_all, attn_bev_all, index_all = [], [], [], [], []
        # Layer 1: attention over the BEV window around each heatmap peak.
        mem, pos, bias, index = self._bev_window(bev_tokens, ref, self.log_sigma_bev, on_cells=True)
        query, attn1 = self.layers[0](query, zero_pos, [(mem, pos)], bias)
        lg, box, lv = self._decode(self.heads[0](query), ref, query_class)
        logits_all.append(lg)
        boxes_all.append(box)
        logvar_all.append(lv)
        attn_bev_all.append(attn1)
        index_all.append(index)

        # Layer 2: one softmax over the BEV window around the refined centre and all image cells,
        # biased towards the cells near the centre's projection into the camera.
        ref2 = box[..., 0:2].detach()
        centre = torch.cat([box[..., 0:3].detach(), torch.ones_like(box[..., :1])], dim=-1)  # (B, Q, 4)
        proj = centre @ lidar2img.transpose(1, 2)  # (B, Q, 3)
        depth = proj[..., 2]
        uv = proj[..., 0:2] / depth.clamp(min=0.1)[..., None]
        wi, hi = self.image_wh[0], self.image_wh[1]
        visible = (depth > 0.5) & (uv[..., 0] > -1) & (uv[..., 0] < wi + 1) & (uv[..., 1] > -1) & (uv[..., 1] < hi + 1)
        visible = visible & (camera_valid[:, None] > 0.5)
        dist2_img = (uv[..., 0:1] - self.image_uv[:, 0]) ** 2 + (uv[..., 1:2] - self.image_uv[:, 1]) ** 2
        img_bias = gaussian_bias(dist2_img, self.log_sigma_image) + torch.where(
            visible, 0.0, MASKED)[:, None, :, None]
        mem, pos, bev_bias, index = self._bev_window(bev_tokens, ref2, self.log_sigma_bev2)
        if bev_valid is not None:
            bev_bias = bev_bias + torch.where(bev_valid > 0.5, 0.0, MASKED)[:, None, None, None]
        query, attn2 = self.layers[1](query, zero_pos, [(mem, pos), (img, img_pos[None])],
                                      torch.cat([bev_bias, img_bias], dim=-1))
        lg, box, lv = self._decode(self.heads[1](query), ref2, query_class)
        logits_all.append(lg)
        boxes_all.append(box)
        logvar_all.append(lv)
        k = mem.shape[2]
        attn_bev_all.append(attn2[..., :k])
        index_all.append(index)
        attn_image = attn2[..., k:k + n_img]
        camera_share = attn_image.sum(-1).mean(1)
        return NetOutput(
            heatmap=heatmap, query_ref=ref, query_class=query_class,
            logits=torch.stack(logits_all), boxes=torch.stack(boxes_all), logvar=torch.stack(logvar_all),
            attn_bev=torch.stack(attn_bev_all), attn_bev_index=torch.stack(index_all), attn_image=attn_image,
            camera_share=camera_share, query_features=query, frame_embedding=frame_embedding,
        )
