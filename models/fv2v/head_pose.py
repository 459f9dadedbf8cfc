"""H, the head-pose estimator: image -> yaw, pitch, roll (degrees) and translation t.

Angles as in Hopenet: each axis is classified into N_BINS bins, and the angle is the expectation of
the bin centres under the softmax, so the net trains with cross-entropy on bins and a regression
loss on the expectation. Translation is plain regression in normalized coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.fv2v.blocks import ImageEncoder, resize
from models.fv2v.config import Fv2vConfig


@dataclass
class HeadPose:
    """What H gives for a batch."""

    logits: torch.Tensor
    """(B, 3, n_bins) bin logits for yaw, pitch, roll."""
    angles: torch.Tensor
    """(B, 3) yaw, pitch, roll in degrees (softmax expectation over bin centres)."""
    translation: torch.Tensor
    """(B, 3) t in normalized coordinates."""


class HeadPoseEstimator(nn.Module):
    """image (B, 3, S, S) in [0, 1] -> HeadPose (logits (B, 3, n_bins), angles (B, 3), t (B, 3))."""

    def __init__(self, cfg: Fv2vConfig) -> None:
        super().__init__()
        h = cfg.head_pose
        self.input_size, self.n_bins = h.input_size, h.n_bins
        self.encoder = ImageEncoder(h.base_ch, h.max_ch, h.n_stages)
        self.angle_head = nn.Linear(self.encoder.out_ch, 3 * h.n_bins)
        self.translation_head = nn.Linear(self.encoder.out_ch, 3)
        nn.init.zeros_(self.translation_head.weight)  # start at t = 0: the crop is centred
        nn.init.zeros_(self.translation_head.bias)
        centres = (torch.arange(h.n_bins, dtype=torch.float32) + 0.5) * h.bin_deg - h.n_bins * h.bin_deg / 2
        self.register_buffer("bin_centres", centres, persistent=False)  # degrees, (n_bins,)
        self.bin_deg = h.bin_deg

    def bin_index(self, angles: torch.Tensor) -> torch.Tensor:
        """(...) degrees -> (...) long bin labels for the cross-entropy (clamped to the range)."""
        idx = torch.floor((angles + self.n_bins * self.bin_deg / 2) / self.bin_deg)
        return idx.clamp(0, self.n_bins - 1).long()

    def forward(self, image: torch.Tensor) -> HeadPose:
        feat = self.encoder(resize(image, self.input_size))
        logits = self.angle_head(feat).float().reshape(-1, 3, self.n_bins)
        angles = torch.softmax(logits, dim=-1) @ self.bin_centres
        return HeadPose(logits=logits, angles=angles, translation=self.translation_head(feat).float())
