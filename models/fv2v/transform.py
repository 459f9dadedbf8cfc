"""Keypoint transform x = R x_c + t + δ, rotations from angles, and equivariance helpers.

Coordinates are normalized to [-1, 1] over the crop: x right, y down, z away from the camera
(the same axes as models/mesh/pose.py, whose angles are the head-pose teacher), so
R = Rz(roll) Ry(yaw) Rx(pitch) exactly as there. grid_sample's last grid axis is (x, y, z).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CROP_WIDTHS_PER_UNIT = 0.5  # normalized coordinates span 2 units per crop width


def rotation_matrix(angles_deg: torch.Tensor) -> torch.Tensor:
    """(..., 3) yaw, pitch, roll in degrees -> (..., 3, 3), R = Rz(roll) Ry(yaw) Rx(pitch)."""
    yaw, pitch, roll = torch.deg2rad(angles_deg.float()).unbind(-1)
    one, zero = torch.ones_like(yaw), torch.zeros_like(yaw)
    cp, sp, cy, sy, cr, sr = pitch.cos(), pitch.sin(), yaw.cos(), yaw.sin(), roll.cos(), roll.sin()
    rx = torch.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).unflatten(-1, (3, 3))
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).unflatten(-1, (3, 3))
    rz = torch.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1).unflatten(-1, (3, 3))
    return rz @ ry @ rx


def euler_angles(rot: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation made by rotation_matrix -> (..., 3) yaw, pitch, roll degrees."""
    yaw = torch.asin((-rot[..., 2, 0]).clamp(-1.0, 1.0))
    pitch = torch.atan2(rot[..., 2, 1], rot[..., 2, 2])
    roll = torch.atan2(rot[..., 1, 0], rot[..., 0, 0])
    return torch.rad2deg(torch.stack([yaw, pitch, roll], -1))


def transform_keypoints(kp_c: torch.Tensor, rot: torch.Tensor, t: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """x = R x_c + t + δ.

    kp_c (B, K, 3) canonical keypoints, rot (B, 3, 3), t (B, 3), delta (B, K, 3) -> (B, K, 3)."""
    return kp_c @ rot.transpose(-1, -2) + t[:, None, :] + delta


def identity_grid(
    d: int, h: int, w: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(D, H, W, 3) voxel centres in normalized (x, y, z), align_corners=True convention."""
    zs = (
        torch.linspace(-1.0, 1.0, d, device=device, dtype=dtype)
        if d > 1
        else torch.zeros(1, device=device, dtype=dtype)
    )
    ys = torch.linspace(-1.0, 1.0, h, device=device, dtype=dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=device, dtype=dtype)
    z, y, x = torch.meshgrid(zs, ys, xs, indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def random_affine(
    batch: int,
    max_rot_deg: float,
    max_scale: float,
    max_shift: float,
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """(B, 2, 3) random similarity transforms for the equivariance loss.

    theta maps output coordinates to input coordinates (affine_grid's convention)."""

    def uniform(lim: float) -> torch.Tensor:
        return (torch.rand(batch, generator=generator) * 2 - 1) * lim

    ang = torch.deg2rad(uniform(max_rot_deg))
    scale = 1.0 + uniform(max_scale)
    tx, ty = uniform(max_shift), uniform(max_shift)
    c, s = ang.cos() * scale, ang.sin() * scale
    theta = torch.stack([torch.stack([c, -s, tx], -1), torch.stack([s, c, ty], -1)], 1)
    return theta.to(device)


def warp_image(img: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) image sampled at theta @ p for every output point p (border padded)."""
    grid = F.affine_grid(theta.to(img.dtype), list(img.shape), align_corners=True)
    return F.grid_sample(img, grid, padding_mode="border", align_corners=True)


def warp_points(points_xy: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """(B, K, 2) points of the warped image -> the same points in the original image: theta @ p."""
    return points_xy @ theta[:, :, :2].transpose(-1, -2) + theta[:, None, :, 2]
