"""G, the generator: warped feature volume w(f_s) and occlusion map -> output frame.

Depth is folded into channels (the paper's 3D -> 2D projection), a 2D residual trunk at volume
resolution inpaints what the occlusion map marks as missing, and nearest-upsampling blocks bring it
back to the image size.
"""

from __future__ import annotations

import torch
from torch import nn

from models.fv2v.blocks import ResBlock2d, Up2d, norm
from models.fv2v.config import Fv2vConfig


class Generator(nn.Module):
    """(w(f_s) (B, C, D, H, W), occlusion (B, 1, H, W)) -> image (B, 3, H*2**n_down, W*2**n_down), [0, 1]."""

    def __init__(self, cfg: Fv2vConfig) -> None:
        super().__init__()
        g, a = cfg.generator, cfg.appearance
        self.project = nn.Sequential(nn.Conv2d(a.feat_ch * a.depth, g.ch, 3, padding=1), norm(g.ch), nn.ReLU())
        self.trunk = nn.Sequential(*(ResBlock2d(g.ch) for _ in range(g.n_res)))
        ups: list[nn.Module] = []
        prev = g.ch
        for i in range(a.n_down):
            c = max(g.min_ch, g.ch // 2 ** (i + 1))
            ups.append(Up2d(prev, c))
            prev = c
        self.up = nn.Sequential(*ups)
        self.out = nn.Conv2d(prev, 3, 7, padding=3)

    def forward(self, warped: torch.Tensor, occlusion: torch.Tensor) -> torch.Tensor:
        x = self.project(warped.flatten(1, 2))  # (B, C*D, H, W) -> (B, ch, H, W)
        x = self.trunk(x * occlusion.to(x.dtype))
        return torch.sigmoid(self.out(self.up(x)))
