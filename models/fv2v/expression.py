"""Δ, the expression deformation estimator: image -> K 3D keypoint offsets δ.

Runs at the sender every frame together with H; δ is what the wire carries as "expression".
"""

from __future__ import annotations

import torch
from torch import nn

from models.fv2v.blocks import ImageEncoder, resize
from models.fv2v.config import Fv2vConfig

INIT_STD = 1e-3  # δ starts near zero: the deformation prior wants it small anyway


class ExpressionDeformationEstimator(nn.Module):
    """image (B, 3, S, S) in [0, 1] -> δ (B, K, 3) in normalized coordinates."""

    def __init__(self, cfg: Fv2vConfig) -> None:
        super().__init__()
        e = cfg.expression
        self.input_size, self.num_kp = e.input_size, cfg.num_kp
        self.encoder = ImageEncoder(e.base_ch, e.max_ch, e.n_stages)
        self.head = nn.Linear(self.encoder.out_ch, 3 * cfg.num_kp)
        nn.init.normal_(self.head.weight, std=INIT_STD)
        nn.init.zeros_(self.head.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        feat = self.encoder(resize(image, self.input_size))
        return self.head(feat).float().reshape(-1, self.num_kp, 3)
