"""M, the motion field estimator: keypoints + source volume -> dense 3D warp and occlusion map.

Sparse motions as in first-order-model, one per keypoint plus an identity one for the background:

    w_k(z) = J_k (z - x_d,k) + x_s,k,   w_0(z) = z

where z is a point of the driving volume and J_k an optional Jacobian (face-vid2vid uses the same
J_k = R_s R_d^-1 for every k; without Jacobians J_k = I). M predicts a soft mask m_k(z) (softmax over
k) and composes w(z) = sum_k m_k(z) w_k(z). Because the mask sums to one and the sparse motions are
affine, driving keypoints equal to the source keypoints (and J = I) give w(z) = z exactly: the
identity warp. M itself runs on a grid downsampled by grid_scale in height and width; the mask is
upsampled and the composition evaluated at full volume resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.fv2v.blocks import Hourglass
from models.fv2v.config import Fv2vConfig
from models.fv2v.transform import identity_grid

MASK_KERNEL = 3  # kernel of the mask / occlusion heads (7 in FOMM; 3 keeps the 3D head cheap)


@dataclass
class MotionField:
    """What M gives for a batch."""

    deformation: torch.Tensor
    """(B, D, H, W, 3) sampling positions in the source volume, normalized (x, y, z)."""
    mask: torch.Tensor
    """(B, K+1, D, h, w) soft composition mask (index 0: background), sums to 1 over K+1."""
    occlusion: torch.Tensor
    """(B, 1, H, W) in [0, 1]: 0 where the source has nothing to show."""


class MotionFieldEstimator(nn.Module):
    """(f_s (B, C, D, H, W), x_s (B, K, 3), x_d (B, K, 3), J (B, K, 3, 3) | None) -> MotionField."""

    def __init__(self, cfg: Fv2vConfig) -> None:
        super().__init__()
        m, a = cfg.motion, cfg.appearance
        self.num_kp, self.scale, self.sigma = cfg.num_kp, m.grid_scale, m.sigma
        self.compress = nn.Conv3d(a.feat_ch, m.compress_ch, 1)
        in_ch = (cfg.num_kp + 1) * (m.compress_ch + 1)
        self.hourglass = Hourglass(3, in_ch, m.base_ch, m.max_ch, m.n_blocks)
        self.mask = nn.Conv3d(self.hourglass.out_ch, cfg.num_kp + 1, MASK_KERNEL, padding=MASK_KERNEL // 2)
        self.occlusion = nn.Conv2d(self.hourglass.out_ch * a.depth, 1, MASK_KERNEL, padding=MASK_KERNEL // 2)

    @staticmethod
    def sparse_motions(
        grid: torch.Tensor, kp_s: torch.Tensor, kp_d: torch.Tensor, jacobian: torch.Tensor | None
    ) -> torch.Tensor:
        """grid (D, H, W, 3) -> (B, K+1, D, H, W, 3): w_0 = z, w_k = J_k (z - x_d,k) + x_s,k."""
        b = kp_s.shape[0]
        rel = grid[None, None] - kp_d[:, :, None, None, None, :]  # (B, K, D, H, W, 3)
        if jacobian is not None:
            rel = torch.einsum("bkij,bkdhwj->bkdhwi", jacobian, rel)
        motions = rel + kp_s[:, :, None, None, None, :]
        return torch.cat([grid[None, None].expand(b, 1, *grid.shape), motions], dim=1)

    def forward(
        self,
        volume: torch.Tensor,
        kp_s: torch.Tensor,
        kp_d: torch.Tensor,
        jacobian: torch.Tensor | None = None,
    ) -> MotionField:
        b, _, d, h_full, w_full = volume.shape
        kp_s, kp_d = kp_s.float(), kp_d.float()
        small = F.avg_pool3d(volume, (1, self.scale, self.scale)) if self.scale > 1 else volume
        _, _, _, h, w = small.shape
        grid = identity_grid(d, h, w, device=volume.device)
        motions = self.sparse_motions(grid, kp_s, kp_d, jacobian)  # (B, K+1, D, h, w, 3)

        # Source features moved by each sparse motion: what M looks at to choose between them.
        feat = self.compress(small)
        c = feat.shape[1]
        feat = feat[:, None].expand(b, self.num_kp + 1, c, d, h, w).reshape(-1, c, d, h, w)
        deformed = F.grid_sample(feat.float(), motions.reshape(-1, d, h, w, 3), align_corners=True)
        deformed = deformed.reshape(b, self.num_kp + 1, c, d, h, w)

        # Gaussian heatmap differences (driving minus source), zero for the background motion.
        def gauss(kp: torch.Tensor) -> torch.Tensor:
            dist = ((grid[None, None] - kp[:, :, None, None, None, :]) ** 2).sum(-1)
            return torch.exp(-0.5 * dist / self.sigma)

        heat = gauss(kp_d) - gauss(kp_s)  # (B, K, D, h, w)
        heat = torch.cat([torch.zeros_like(heat[:, :1]), heat], dim=1)[:, :, None]

        x = torch.cat([heat, deformed], dim=2).reshape(b, -1, d, h, w).to(volume.dtype)
        pred = self.hourglass(x)
        mask = torch.softmax(self.mask(pred).float(), dim=1)  # (B, K+1, D, h, w)
        occ = torch.sigmoid(self.occlusion(pred.flatten(1, 2)).float())  # (B, 1, h, w)

        # Compose at full resolution: w(z) = A(z) z + c(z), A = sum m_k J_k, c = sum m_k (x_s - J x_d).
        full_mask = mask
        if self.scale > 1:
            full_mask = F.interpolate(mask, size=(d, h_full, w_full), mode="trilinear", align_corners=True)
            occ = F.interpolate(occ, size=(h_full, w_full), mode="bilinear", align_corners=True)
        grid_full = identity_grid(d, h_full, w_full, device=volume.device)
        eye = torch.eye(3, device=volume.device).expand(b, 1, 3, 3)
        jac = eye.expand(b, self.num_kp, 3, 3) if jacobian is None else jacobian.float()
        jac = torch.cat([eye, jac], dim=1)  # (B, K+1, 3, 3)
        zero = torch.zeros_like(kp_s[:, :1])
        offset = torch.cat([zero, kp_s - (jac[:, 1:] @ kp_d[..., None])[..., 0]], dim=1)  # (B, K+1, 3)
        if jacobian is None:  # A = I: skip the per-voxel matrix product
            flow = grid_full[None] + torch.einsum("bkdhw,bki->bdhwi", full_mask, offset)
        else:
            a_mat = torch.einsum("bkdhw,bkij->bdhwij", full_mask, jac)
            flow = (a_mat @ grid_full[None, ..., None])[..., 0] + torch.einsum("bkdhw,bki->bdhwi", full_mask, offset)
        return MotionField(deformation=flow, mask=mask, occlusion=occ)


def warp_volume(volume: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
    """Sample f_s (B, C, D, H, W) at deformation (B, D, H, W, 3) -> w(f_s) (B, C, D, H, W)."""
    return F.grid_sample(volume, deformation.to(volume.dtype), align_corners=True)
