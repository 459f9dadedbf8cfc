"""Multi-scale patch discriminator (training only), returning features for feature matching."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from models.fv2v.config import Fv2vConfig

LEAK = 0.2  # LeakyReLU slope (pix2pixHD / FOMM)


class PatchDiscriminator(nn.Module):
    """image (B, 3, S, S) -> (features [(B, c_i, S/2**(i+1), ...)], logits (B, 1, s, s))."""

    def __init__(self, base_ch: int, max_ch: int, n_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        prev = 3
        for i in range(n_layers):
            c = min(max_ch, base_ch * 2**i)
            norm_layer: nn.Module = nn.InstanceNorm2d(c, affine=True) if i > 0 else nn.Identity()
            self.layers.append(
                nn.Sequential(spectral_norm(nn.Conv2d(prev, c, 4, stride=2, padding=1)), norm_layer, nn.LeakyReLU(LEAK))
            )
            prev = c
        self.logits = spectral_norm(nn.Conv2d(prev, 1, 3, padding=1))

    def forward(self, image: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        feats = []
        x = image
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats, self.logits(x)


class MultiScaleDiscriminator(nn.Module):
    """image (B, 3, S, S) -> one (features, logits) pair per scale (S, S/2, ...)."""

    def __init__(self, cfg: Fv2vConfig) -> None:
        super().__init__()
        d = cfg.discriminator
        self.scales = nn.ModuleList(PatchDiscriminator(d.base_ch, d.max_ch, d.n_layers) for _ in range(d.n_scales))

    def forward(self, image: torch.Tensor) -> list[tuple[list[torch.Tensor], torch.Tensor]]:
        out = []
        for i, disc in enumerate(self.scales):
            x = image if i == 0 else F.avg_pool2d(image, 2**i)
            out.append(disc(x))
        return out
