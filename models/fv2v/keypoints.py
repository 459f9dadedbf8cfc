"""L, the canonical keypoint detector: source image -> K canonical 3D keypoints x_c.

x_c is identity-specific and pose-free; the receiver computes it once per keyframe, so it never
travels on the wire. Keypoints are the expectation of softmax 3D heatmaps (differentiable).
"""

from __future__ import annotations

import torch
from torch import nn

from models.fv2v.blocks import Hourglass, resize
from models.fv2v.config import Fv2vConfig
from models.fv2v.transform import identity_grid


class CanonicalKeypointDetector(nn.Module):
    """image (B, 3, S, S) in [0, 1] -> x_c (B, K, 3) in normalized (x, y, z) coordinates."""

    def __init__(self, cfg: Fv2vConfig) -> None:
        super().__init__()
        k = cfg.keypoints
        self.num_kp, self.heat_depth, self.input_size = cfg.num_kp, k.heat_depth, k.input_size
        self.temperature = k.temperature
        self.hourglass = Hourglass(2, 3, k.base_ch, k.max_ch, k.n_blocks)
        # One channel per (keypoint, depth slice): the 2D U-Net output is read as K 3D heatmaps.
        self.heatmap = nn.Conv2d(self.hourglass.out_ch, cfg.num_kp * k.heat_depth, 7, padding=3)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = resize(image, self.input_size)
        heat = self.heatmap(self.hourglass(x))  # (B, K*Dk, h, w)
        b, _, h, w = heat.shape
        heat = heat.float().reshape(b, self.num_kp, -1) / self.temperature
        prob = torch.softmax(heat, dim=-1)  # (B, K, Dk*h*w)
        grid = identity_grid(self.heat_depth, h, w, device=heat.device).reshape(-1, 3)  # (Dk*h*w, 3)
        return prob @ grid  # (B, K, 3)
