"""The fv2v model: all inference networks in one module, and where they run.

keyframe(): F, L, H, Δ once per keyframe (receiver).  estimate(): H, Δ per frame (sender).
render(): M, G per frame (receiver).  Device and precision are chosen in select_runtime() only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from models.device import default_device
from models.fv2v.appearance import AppearanceFeatureExtractor
from models.fv2v.blocks import resize
from models.fv2v.config import Fv2vConfig
from models.fv2v.expression import ExpressionDeformationEstimator
from models.fv2v.generator import Generator
from models.fv2v.head_pose import HeadPose, HeadPoseEstimator
from models.fv2v.keypoints import CanonicalKeypointDetector
from models.fv2v.motion import MotionField, MotionFieldEstimator, warp_volume
from models.fv2v.transform import rotation_matrix, transform_keypoints

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class Runtime:
    """Where and how the networks run."""

    device: torch.device
    """cuda when available, else cpu."""
    dtype: torch.dtype | None
    """Autocast dtype (torch.bfloat16), or None for plain fp32."""
    channels_last: bool
    """2D convolutions in NHWC (faster on CUDA tensor cores)."""

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def select_runtime(device: str | torch.device | None = None, precision: str = "auto") -> Runtime:
    """Device (models.device.default_device unless given) and precision: bf16 autocast on CUDA.

    "auto" keeps the CPU in fp32: on CPUs without native bf16 (AVX2, e.g. the dev machines) oneDNN
    emulates it and convolutions run 3-40x slower than fp32 (measured); "bf16" forces it anyway."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    dev = torch.device(device) if device is not None else default_device()
    bf16_auto = dev.type == "cuda" and torch.cuda.is_bf16_supported()
    dtype = torch.bfloat16 if precision == "bf16" or (precision == "auto" and bf16_auto) else None
    return Runtime(device=dev, dtype=dtype, channels_last=dev.type == "cuda")


@dataclass
class KeyframeCache:
    """What the receiver keeps per keyframe."""

    volume: torch.Tensor
    """f_s (B, C, D, H, W) appearance features."""
    kp_canonical: torch.Tensor
    """x_c (B, K, 3) canonical keypoints."""
    rotation: torch.Tensor
    """R_s (B, 3, 3) source head rotation."""
    kp_source: torch.Tensor
    """x_s = R_s x_c + t_s + δ_s (B, K, 3)."""
    angles: torch.Tensor
    """(B, 3) source yaw, pitch, roll in degrees."""


class Driving(NamedTuple):
    """Output of Fv2vModel.drive for a batch of driving images."""

    pose: HeadPose
    """H's output (angles in degrees, translation, bin logits)."""
    delta: torch.Tensor
    """Δ's expression deformations δ (B, K, 3)."""
    rotation: torch.Tensor
    """R from the angles (B, 3, 3)."""
    keypoints: torch.Tensor
    """x = R x_c + t + δ (B, K, 3)."""


class Fv2vModel(nn.Module):
    """F, L, H, Δ, M, G of face-vid2vid (the discriminator lives in the trainer)."""

    def __init__(self, cfg: Fv2vConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.appearance = AppearanceFeatureExtractor(cfg)  # F
        self.canonical = CanonicalKeypointDetector(cfg)  # L
        self.head_pose = HeadPoseEstimator(cfg)  # H
        self.expression = ExpressionDeformationEstimator(cfg)  # Δ
        self.motion = MotionFieldEstimator(cfg)  # M
        self.generator = Generator(cfg)  # G
        self.runtime = Runtime(torch.device("cpu"), None, False)

    # ---- placement -------------------------------------------------------------------------
    def place(self, runtime: Runtime | None = None) -> Fv2vModel:
        """Move to the runtime's device (default: select_runtime()); NHWC 2D convs on CUDA."""
        self.runtime = runtime or select_runtime()
        self.to(self.runtime.device)
        if self.runtime.channels_last:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):  # 3D convs keep NCDHW: channels_last is 4D only
                    m.to(memory_format=torch.channels_last)
        return self

    def to_input(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (H, W, 3) / (B, H, W, 3) RGB, or float (B, 3, H, W) in [0, 1] -> (B, 3, S, S) on device."""
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.shape[-1] != 3:
                raise ValueError(f"expected uint8 RGB (H, W, 3), got {image.dtype} {image.shape}")
            x = torch.from_numpy(np.ascontiguousarray(image))
            x = (x[None] if x.ndim == 3 else x).permute(0, 3, 1, 2).float() / 255.0
        else:
            x = image.float()
        x = resize(x.to(self.runtime.device), self.cfg.image_size)
        return x.contiguous(memory_format=torch.channels_last) if self.runtime.channels_last else x

    # ---- building blocks shared with training ---------------------------------------------
    def source(self, src: torch.Tensor) -> KeyframeCache:
        """F, L, H, Δ on source images (B, 3, S, S)."""
        return self.source_with_pose(src)[0]

    def source_with_pose(self, src: torch.Tensor) -> tuple[KeyframeCache, HeadPose]:
        """source(), also returning H's full output (training needs the bin logits)."""
        volume = self.appearance(src)
        kp_c = self.canonical(src)
        pose, _, rot, kp_s = self.drive(src, kp_c)
        cache = KeyframeCache(volume=volume, kp_canonical=kp_c, rotation=rot, kp_source=kp_s, angles=pose.angles)
        return cache, pose

    def drive(self, images: torch.Tensor, kp_canonical: torch.Tensor) -> Driving:
        """The driving chain on images (B, 3, S, S): H -> pose, Δ -> δ, R from the angles, then
        x = R x_c + t + δ against the keyframe's canonical keypoints x_c (B, K, 3)."""
        pose = self.head_pose(images)
        delta = self.expression(images)
        rot = rotation_matrix(pose.angles)
        return Driving(pose, delta, rot, transform_keypoints(kp_canonical, rot, pose.translation, delta))

    def animate(
        self, cache: KeyframeCache, rot_d: torch.Tensor, kp_d: torch.Tensor
    ) -> tuple[torch.Tensor, MotionField]:
        """M and G: driving rotation (B, 3, 3) and keypoints (B, K, 3) -> (image (B, 3, S, S), motion)."""
        jac = None
        if self.cfg.motion.rotation_jacobian:
            jac = (cache.rotation @ rot_d.transpose(-1, -2))[:, None].expand(-1, self.cfg.num_kp, 3, 3)
        motion = self.motion(cache.volume, cache.kp_source, kp_d, jac)
        warped = warp_volume(cache.volume, motion.deformation)
        return self.generator(warped, motion.occlusion), motion

    # ---- inference -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _infer(self) -> Iterator[None]:
        with torch.inference_mode(), self.runtime.autocast():
            yield

    def keyframe(self, image: np.ndarray | torch.Tensor) -> KeyframeCache:
        """F, L, H, Δ once per keyframe."""
        with self._infer():
            return self.source(self.to_input(image))

    def estimate(self, image: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """H and Δ: -> (angles (B, 3) degrees, t (B, 3), δ (B, K, 3)), normalized coordinates, fp32."""
        with self._infer():
            x = self.to_input(image)
            pose = self.head_pose(x)
            delta = self.expression(x)
        return pose.angles.float(), pose.translation.float(), delta.float()

    def render(
        self, cache: KeyframeCache, pose: np.ndarray | torch.Tensor, expr: np.ndarray | torch.Tensor
    ) -> np.ndarray:
        """M and G. pose (6,) or (B, 6): yaw, pitch, roll degrees, t (3); expr (K, 3) or (B, K, 3).

        Returns uint8 RGB (S, S, 3), or (B, S, S, 3) for batched inputs."""
        dev = self.runtime.device
        p = torch.as_tensor(pose, dtype=torch.float32, device=dev)
        e = torch.as_tensor(expr, dtype=torch.float32, device=dev)
        batched = p.ndim == 2
        p, e = (p, e) if batched else (p[None], e[None])
        with self._infer():
            rot = rotation_matrix(p[:, :3])
            kp_d = transform_keypoints(cache.kp_canonical.float(), rot, p[:, 3:6], e)
            img, _ = self.animate(cache, rot, kp_d)
            out = (img.float().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return out if batched else out[0]
