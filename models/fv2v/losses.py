"""The fv2v training losses (the paper's, with MS-SSIM standing in for the VGG perceptual loss, whose
ImageNet weights cannot be fetched here)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_msssim import ms_ssim, ssim

from models.fv2v.head_pose import HeadPose
from models.fv2v.transform import warp_points

SSIM_SMALL_WIN = 7  # SSIM window for small (e.g. 64x64) images; 11 would blur their structure
RAD_PER_DEG = torch.pi / 180.0


def reconstruction_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred.float() - target.float()).abs().mean()


def ssim_loss(pred: torch.Tensor, target: torch.Tensor, min_ms_size: int) -> torch.Tensor:
    """1 - MS-SSIM (5 scales need > 160 px), plain 1 - SSIM on smaller images. Images in [0, 1]."""
    p, t = pred.float(), target.float()
    if min(p.shape[-2:]) > min_ms_size:
        return 1.0 - ms_ssim(p, t, data_range=1.0, size_average=True)
    return 1.0 - ssim(p, t, data_range=1.0, size_average=True, win_size=SSIM_SMALL_WIN)


def hinge_d_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """Discriminator hinge loss, averaged over scales."""
    terms = [F.relu(1.0 - r.float()).mean() + F.relu(1.0 + f.float()).mean() for r, f in zip(real, fake, strict=True)]
    return torch.stack(terms).mean()


def hinge_g_loss(fake: list[torch.Tensor]) -> torch.Tensor:
    """Generator hinge loss, averaged over scales."""
    return torch.stack([-f.float().mean() for f in fake]).mean()


def feature_matching(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """L1 between discriminator features of real (detached) and generated images, all scales/layers."""
    terms = [
        (fr.detach().float() - ff.float()).abs().mean()
        for rs, fs in zip(real, fake, strict=True)
        for fr, ff in zip(rs, fs, strict=True)
    ]
    return torch.stack(terms).mean()


def equivariance(kp: torch.Tensor, kp_warped: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Keypoints (B, K, 3) of an image and kp_warped of the image warped by theta must agree in (x, y)."""
    return (kp[..., :2].float() - warp_points(kp_warped[..., :2].float(), theta.float())).abs().mean()


def keypoint_prior(kp: torch.Tensor, min_dist_sq: float, depth_target: float) -> torch.Tensor:
    """Spread (pairs closer than sqrt(min_dist_sq) are penalized) + mean depth near depth_target."""
    kp = kp.float()
    k = kp.shape[1]
    dist_sq = ((kp[:, :, None] - kp[:, None]) ** 2).sum(-1)  # (B, K, K)
    off_diag = ~torch.eye(k, dtype=torch.bool, device=kp.device)
    spread = F.relu(min_dist_sq - dist_sq)[:, off_diag].mean()
    depth = (kp[..., 2].mean(-1) - depth_target).abs().mean()
    return spread + depth


def head_pose(pred: HeadPose, target_deg: torch.Tensor, bin_index: torch.Tensor, reg_weight: float) -> torch.Tensor:
    """Hopenet loss vs teacher angles (B, 3) degrees (NaN = no label): bin cross-entropy + L1 in radians.

    bin_index: (B, 3) bin labels of target_deg (any value where NaN)."""
    valid = torch.isfinite(target_deg)
    if not bool(valid.any()):
        return pred.logits.sum() * 0.0  # keeps the graph (DDP) without moving anything
    ce = F.cross_entropy(pred.logits[valid], bin_index[valid])
    reg = (pred.angles[valid] - target_deg[valid]).abs().mean() * RAD_PER_DEG
    return ce + reg_weight * reg


def deformation_prior(delta: torch.Tensor) -> torch.Tensor:
    """L1 on the expression deformations δ (B, K, 3): expressions are small offsets."""
    return delta.float().abs().mean()
