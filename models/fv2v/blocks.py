"""Layers shared by the fv2v networks.

GroupNorm everywhere instead of the paper's BatchNorm: the receiver renders one frame at a time and
training batches are small, so batch statistics would be noise; GroupNorm is batch-size independent.
"""

from __future__ import annotations

import torch
from torch import nn

MAX_NORM_GROUPS = 8


def norm(ch: int) -> nn.GroupNorm:
    """GroupNorm with the most groups (<= MAX_NORM_GROUPS) that divide ch."""
    groups = next(g for g in range(min(MAX_NORM_GROUPS, ch), 0, -1) if ch % g == 0)
    return nn.GroupNorm(groups, ch)


class ResBlock2d(nn.Module):
    """Pre-activation residual block: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            norm(ch),
            nn.ReLU(),
            nn.Conv2d(ch, ch, 3, padding=1),
            norm(ch),
            nn.ReLU(),
            nn.Conv2d(ch, ch, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResBlock3d(nn.Module):
    """Pre-activation residual block: (B, C, D, H, W) -> (B, C, D, H, W)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            norm(ch),
            nn.ReLU(),
            nn.Conv3d(ch, ch, 3, padding=1),
            norm(ch),
            nn.ReLU(),
            nn.Conv3d(ch, ch, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Down2d(nn.Module):
    """(B, Cin, H, W) -> (B, Cout, H/2, W/2)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), norm(cout), nn.ReLU(), nn.AvgPool2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Up2d(nn.Module):
    """(B, Cin, H, W) -> (B, Cout, 2H, 2W)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Upsample(scale_factor=2.0, mode="nearest"),
            nn.Conv2d(cin, cout, 3, padding=1),
            norm(cout),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Down3d(nn.Module):
    """(B, Cin, D, H, W) -> (B, Cout, D, H/2, W/2): depth is kept, it is already small."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), norm(cout), nn.ReLU(), nn.AvgPool3d((1, 2, 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Up3d(nn.Module):
    """(B, Cin, D, H, W) -> (B, Cout, D, 2H, 2W)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Upsample(scale_factor=(1.0, 2.0, 2.0), mode="nearest"),
            nn.Conv3d(cin, cout, 3, padding=1),
            norm(cout),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Hourglass(nn.Module):
    """U-Net with skip concatenation, 2D or 3D.

    (B, Cin, [D,] H, W) -> (B, base_ch + Cin, [D,] H, W); H and W divisible by 2**n_blocks."""

    def __init__(self, dims: int, cin: int, base_ch: int, max_ch: int, n_blocks: int) -> None:
        super().__init__()
        down, up = (Down2d, Up2d) if dims == 2 else (Down3d, Up3d)
        chs = [min(max_ch, base_ch * 2**i) for i in range(n_blocks)]
        self.down = nn.ModuleList()
        prev = cin
        for c in chs:
            self.down.append(down(prev, c))
            prev = c
        self.up = nn.ModuleList()
        skips = [cin, *chs[:-1]]  # channels of the skip each up block concatenates onto
        for i in reversed(range(n_blocks)):
            out = chs[i - 1] if i > 0 else base_ch
            cin_up = prev if i == n_blocks - 1 else prev + skips[i + 1]
            self.up.append(up(cin_up, out))
            prev = out
        self.out_ch = base_ch + cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [x]
        for block in self.down:
            skips.append(block(skips[-1]))
        out = skips.pop()
        for i, block in enumerate(self.up):
            if i > 0:
                out = torch.cat([out, skips.pop()], dim=1)
            out = block(out)
        return torch.cat([out, skips.pop()], dim=1)


class ImageEncoder(nn.Module):
    """Residual 2D encoder to one vector: (B, 3, S, S) -> (B, out_ch). For H and Δ."""

    def __init__(self, base_ch: int, max_ch: int, n_stages: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, base_ch, 7, stride=2, padding=3), norm(base_ch), nn.ReLU()]
        prev = base_ch
        for i in range(n_stages):
            c = min(max_ch, base_ch * 2 ** (i + 1))
            layers += [nn.Conv2d(prev, c, 3, stride=2, padding=1), ResBlock2d(c)]
            prev = c
        layers += [norm(prev), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.out_ch = prev

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def resize(img: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size, size), antialiased when shrinking (no aliasing into H, Δ, L)."""
    if img.shape[-1] == size and img.shape[-2] == size:
        return img
    shrink = img.shape[-1] > size
    return nn.functional.interpolate(img, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
