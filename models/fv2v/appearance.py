"""F, the appearance feature extractor: source image -> 3D feature volume f_s.

Run once per keyframe at the receiver; its output is cached and warped every frame.
"""

from __future__ import annotations

import torch
from torch import nn

from models.fv2v.blocks import Down2d, ResBlock3d, norm
from models.fv2v.config import Fv2vConfig


class AppearanceFeatureExtractor(nn.Module):
    """image (B, 3, S, S) in [0, 1] -> f_s (B, C, D, S/2**n_down, S/2**n_down)."""

    def __init__(self, cfg: Fv2vConfig) -> None:
        super().__init__()
        a = cfg.appearance
        self.feat_ch, self.depth = a.feat_ch, a.depth
        layers: list[nn.Module] = [nn.Conv2d(3, a.base_ch, 7, padding=3), norm(a.base_ch), nn.ReLU()]
        prev = a.base_ch
        for i in range(a.n_down):
            c = min(a.max_ch, a.base_ch * 2 ** (i + 1))
            layers.append(Down2d(prev, c))
            prev = c
        # 2D features -> C*D channels, then folded into depth: the "lifting" of the paper.
        layers.append(nn.Conv2d(prev, a.feat_ch * a.depth, 1))
        self.encoder = nn.Sequential(*layers)
        self.volume = nn.Sequential(*(ResBlock3d(a.feat_ch) for _ in range(a.n_res3d)))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.encoder(image)  # (B, C*D, h, w)
        x = x.unflatten(1, (self.feat_ch, self.depth))  # (B, C, D, h, w)
        return self.volume(x)
