"""LPIPS (AlexNet, v0.1) and DISTS (VGG16) in plain torch, from weight files the user supplies.

No torchvision (installing it here would swap the CPU torch for a CUDA build): the two feature
stacks below are torchvision's `alexnet().features` and `vgg16().features` layer for layer, so
torchvision's own state dicts load into them by key name (`features.0.weight`, ...).

--perceptual-weights DIR holds (any of the names in WEIGHT_FILES; .pth / .pt loaded with
torch.load(weights_only=True), or the same stem as .safetensors):
- LPIPS: torchvision's AlexNet (`alexnet-owt-7be5be79.pth`) + the LPIPS v0.1 linear layers
  (`alex.pth` from the lpips project, lpips/weights/v0.1/alex.pth; keys lin0.model.1.weight ...);
- DISTS: torchvision's VGG16 (`vgg16-397923af.pth`) + DISTS's alpha/beta (`weights.pt` from the
  DISTS_pytorch project, DISTS_pytorch/weights.pt).
A metric whose files are all there is computed; missing or mismatched files give one clear line.

    p = Perceptual.from_dir(DIR)          # PerceptualWeightsError on a bad DIR
    p.score(ref, out)                     # (N, H, W, 3) uint8 RGB each -> {"lpips": [...], "dists": [...]}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

METRICS = ("lpips", "dists")
HIGHER_IS_BETTER = {"lpips": False, "dists": False}
UNITS = {"lpips": "", "dists": ""}

WEIGHT_FILES = {
    "alexnet": ("alexnet-owt-7be5be79", "alexnet"),
    "lpips_alex": ("alex", "lpips_alex"),
    "vgg16": ("vgg16-397923af", "vgg16"),
    "dists": ("weights", "dists", "dists_weights"),
}
"""Role -> accepted file stems (with .pth, .pt or .safetensors)."""
SUFFIXES = (".pth", ".pt", ".safetensors")
NEEDS = {"lpips": ("alexnet", "lpips_alex"), "dists": ("vgg16", "dists")}
FILE_NAMES = {
    "alexnet": "alexnet-owt-7be5be79.pth",
    "lpips_alex": "alex.pth",
    "vgg16": "vgg16-397923af.pth",
    "dists": "weights.pt",
}
SOURCES = {
    "alexnet": "torchvision AlexNet_Weights.IMAGENET1K_V1",
    "lpips_alex": "the lpips project's lpips/weights/v0.1/alex.pth",
    "vgg16": "torchvision VGG16_Weights.IMAGENET1K_V1",
    "dists": "the DISTS_pytorch project's DISTS_pytorch/weights.pt",
}
BATCH = 8  # frames per forward pass: small enough for a busy 2-core box

# LPIPS input scaling (images in [-1, 1]) and layer taps of AlexNet's features (after each ReLU).
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
ALEX_TAPS = (1, 4, 7, 9, 11)
ALEX_CHANNELS = (64, 192, 384, 256, 256)
NORM_EPS = 1e-10
# DISTS: ImageNet normalisation, VGG16 taps relu1_2 ... relu5_3, L2 pooling instead of max pooling.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG_TAPS = (3, 8, 15, 22, 29)
VGG_POOLS = (4, 9, 16, 23)  # max-pool layers DISTS replaces
DISTS_CHANNELS = (3, 64, 128, 256, 512, 512)  # the input itself is stage 0
DISTS_C1 = DISTS_C2 = 1e-6
L2POOL_EPS = 1e-12


class PerceptualWeightsError(ValueError):
    """A --perceptual-weights folder that cannot be used (message is one line)."""


def alexnet_features() -> nn.Sequential:
    """torchvision.models.alexnet().features, same indices."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
    )  # fmt: skip


VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg16_features() -> nn.Sequential:
    """torchvision.models.vgg16().features, same indices."""
    layers: list[nn.Module] = []
    c = 3
    for v in VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.ReLU(inplace=True)]
            c = int(v)
    return nn.Sequential(*layers)


class L2Pool(nn.Module):
    """DISTS's L2 pooling: sqrt of a Hann-weighted 3x3 blur of x^2, stride 2 (anti-aliased pooling)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        a = torch.tensor([0.5, 1.0, 0.5])  # np.hanning(5)[1:-1]
        g = a[:, None] * a[None, :]
        self.register_buffer("filter", (g / g.sum())[None, None].repeat(channels, 1, 1, 1))
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x * x, self.filter, stride=2, padding=1, groups=self.channels)
        return (out + L2POOL_EPS).sqrt()


def _find(directory: Path, role: str) -> Path | None:
    for stem in WEIGHT_FILES[role]:
        for suffix in SUFFIXES:
            p = directory / f"{stem}{suffix}"
            if p.is_file():
                return p
    return None


def _load(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: one line, not a traceback
        raise PerceptualWeightsError(f"{path}: cannot be read as weights ({type(exc).__name__}: {exc})") from exc
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise PerceptualWeightsError(f"{path}: not a state dict of tensors")
    return sd


def _load_into(module: nn.Module, sd: dict[str, torch.Tensor], prefix: str, path: Path) -> None:
    """Load the keys under `prefix` (e.g. 'features.') strictly, with a one-line error on any mismatch."""
    own = module.state_dict()
    sub = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix) and k[len(prefix) :] in own}
    missing = sorted(set(own) - set(sub))
    if missing:
        raise PerceptualWeightsError(f"{path}: missing keys {', '.join(prefix + k for k in missing[:4])}...")
    bad = [k for k in own if own[k].shape != sub[k].shape]
    if bad:
        k = bad[0]
        raise PerceptualWeightsError(
            f"{path}: {prefix}{k} has shape {tuple(sub[k].shape)}, expected {tuple(own[k].shape)}"
        )
    module.load_state_dict(sub)


class LPIPS(nn.Module):
    """Zhang et al. 2018, AlexNet, v0.1 linear calibration. Inputs (N, 3, H, W) in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.features = alexnet_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in ALEX_CHANNELS)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT)[None, :, None, None])
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE)[None, :, None, None])

    def load(self, backbone: dict[str, torch.Tensor], lins: dict[str, torch.Tensor], paths: Sequence[Path]) -> None:
        _load_into(self.features, backbone, "features.", paths[0])
        for k, lin in enumerate(self.lins):
            _load_into(lin, lins, f"lin{k}.model.1.", paths[1])

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = ((x * 2 - 1) - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in ALEX_TAPS:
                out.append(h)
            if i == ALEX_TAPS[-1]:
                break
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(N,) distances."""
        total = torch.zeros(x.shape[0])
        for lin, fx, fy in zip(self.lins, self._taps(x), self._taps(y), strict=True):
            nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + NORM_EPS)
            ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + NORM_EPS)
            total = total + lin((nx - ny) ** 2).mean((1, 2, 3))
        return total


class DISTS(nn.Module):
    """Ding et al. 2020: structure and texture similarity of VGG16 features. Inputs (N, 3, H, W) in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.features = vgg16_features()
        self.pools = nn.ModuleDict({str(i): L2Pool(self.features[i - 2].out_channels) for i in VGG_POOLS})
        n = sum(DISTS_CHANNELS)
        self.register_buffer("alpha", torch.full((1, n, 1, 1), 1.0 / (2 * n)))
        self.register_buffer("beta", torch.full((1, n, 1, 1), 1.0 / (2 * n)))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN)[None, :, None, None])
        self.register_buffer("std", torch.tensor(IMAGENET_STD)[None, :, None, None])

    def load(self, backbone: dict[str, torch.Tensor], ab: dict[str, torch.Tensor], paths: Sequence[Path]) -> None:
        _load_into(self.features, backbone, "features.", paths[0])
        for k in ("alpha", "beta"):
            if k not in ab:
                raise PerceptualWeightsError(f"{paths[1]}: no '{k}' tensor (expected DISTS_pytorch weights.pt)")
            if ab[k].shape != getattr(self, k).shape:
                raise PerceptualWeightsError(
                    f"{paths[1]}: {k} has shape {tuple(ab[k].shape)}, expected {tuple(getattr(self, k).shape)}"
                )
            getattr(self, k).copy_(ab[k])

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = [x]
        h = (x - self.mean) / self.std
        for i, layer in enumerate(self.features):
            h = self.pools[str(i)](h) if str(i) in self.pools else layer(h)
            if i in VGG_TAPS:
                out.append(h)
            if i == VGG_TAPS[-1]:
                break
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(N,) distances (0 for identical images)."""
        w = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha / w, DISTS_CHANNELS, dim=1)
        betas = torch.split(self.beta / w, DISTS_CHANNELS, dim=1)
        s1 = s2 = torch.zeros(x.shape[0])
        for a, b, fx, fy in zip(alphas, betas, self._taps(x), self._taps(y), strict=True):
            mx, my = fx.mean((2, 3), keepdim=True), fy.mean((2, 3), keepdim=True)
            structure = (2 * mx * my + DISTS_C1) / (mx**2 + my**2 + DISTS_C1)
            vx = ((fx - mx) ** 2).mean((2, 3), keepdim=True)
            vy = ((fy - my) ** 2).mean((2, 3), keepdim=True)
            cov = (fx * fy).mean((2, 3), keepdim=True) - mx * my
            texture = (2 * cov + DISTS_C2) / (vx + vy + DISTS_C2)
            s1 = s1 + (a * structure).sum((1, 2, 3))
            s2 = s2 + (b * texture).sum((1, 2, 3))
        return 1 - (s1 + s2)


@dataclass
class Perceptual:
    """The perceptual metrics whose weights were found."""

    nets: dict[str, nn.Module]
    """Metric name -> network in eval mode."""
    skipped: dict[str, str]
    """Metric name -> why it is not computed (files missing)."""

    @classmethod
    def from_dir(cls, directory: Path) -> Perceptual:
        if not directory.is_dir():
            raise PerceptualWeightsError(f"--perceptual-weights {directory}: no such folder")
        found = {role: _find(directory, role) for role in WEIGHT_FILES}
        nets: dict[str, nn.Module] = {}
        skipped: dict[str, str] = {}
        for metric, (backbone_role, head_role) in NEEDS.items():
            missing = [r for r in (backbone_role, head_role) if found[r] is None]
            if missing:
                skipped[metric] = "missing " + "; ".join(f"{FILE_NAMES[r]} ({SOURCES[r]})" for r in missing)
                continue
            paths = [found[backbone_role], found[head_role]]
            assert paths[0] is not None and paths[1] is not None
            net = LPIPS() if metric == "lpips" else DISTS()
            net.load(_load(paths[0]), _load(paths[1]), paths)
            nets[metric] = net.eval()
        if not nets:
            raise PerceptualWeightsError(
                f"--perceptual-weights {directory}: neither LPIPS nor DISTS can run: "
                + " | ".join(f"{m}: {why}" for m, why in skipped.items())
            )
        return cls(nets, skipped)

    def score(self, ref: np.ndarray, out: np.ndarray) -> dict[str, list[float]]:
        """(N, H, W, 3) uint8 RGB pairs -> per-frame distances of every available metric."""
        res: dict[str, list[float]] = {m: [] for m in self.nets}
        with torch.no_grad():
            for s in range(0, len(ref), BATCH):
                x = torch.from_numpy(np.ascontiguousarray(ref[s : s + BATCH])).permute(0, 3, 1, 2).float() / 255
                y = torch.from_numpy(np.ascontiguousarray(out[s : s + BATCH])).permute(0, 3, 1, 2).float() / 255
                for m, net in self.nets.items():
                    res[m] += [float(v) for v in net(x, y)]
        return res
