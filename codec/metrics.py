"""Quality of what the receiver shows against the input crop: the one implementation of every
metric the benchmarks, the demo and the tests report.

PSNR-Y and SSIM (Y, Gaussian 11x11 sigma 1.5, the constants of Wang et al. 2004) with OpenCV,
MS-SSIM on Y (pytorch_msssim's algorithm, in OpenCV), VMAF (vmaf-torch, the vmaf_v0.6.1 model it embeds) on
limited-range Y, and a keypoint distance: mean pixel distance of the 468 MediaPipe face-mesh
landmarks (static-image mode) of the output to those of the input, NaN where either has no face.

Scoring costs far more than encoding, so every codec is scored on the same fixed random subset
of frames of a clip (random, not strided: a stride would alias with the held frames of the
reduced-frame-rate settings and score only freshly sent frames). VMAF, the slowest, uses every
other frame of that subset; its motion feature comes from the full reference sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from models.face import FaceMesh

METRICS = ("psnr_y", "ssim", "ms_ssim", "vmaf", "kp_dist")
HIGHER_IS_BETTER = {"psnr_y": True, "ssim": True, "ms_ssim": True, "vmaf": True, "kp_dist": False}
UNITS = {"psnr_y": "dB", "ssim": "", "ms_ssim": "", "vmaf": "", "kp_dist": "px"}
PEAK = 255.0
MAX_PSNR_DB = 100.0  # identical frames
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # BT.601, what yuv420p carries
LIMITED_Y_SCALE, LIMITED_Y_OFFSET = 219.0 / 255.0, 16.0  # full -> limited range (what VMAF was trained on)
SSIM_WIN, SSIM_SIGMA = 11, 1.5
SSIM_C1, SSIM_C2 = (0.01 * PEAK) ** 2, (0.03 * PEAK) ** 2
MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, five scales
VMAF_FRAME_SHARE = 4  # VMAF (50 ms a frame) on every 4th scored frame


def luma(rgb: np.ndarray) -> np.ndarray:
    """Full-range Y, float32 (H, W)."""
    return rgb.astype(np.float32) @ LUMA


def psnr_y(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR-Y of two RGB pictures."""
    return psnr(luma(a), luma(b))


def psnr(a: np.ndarray, b: np.ndarray, cap_db: float = MAX_PSNR_DB) -> float:
    """PSNR in dB of two same-shape uint8 (or float 0..255) arrays: RGB, or Y planes for PSNR-Y.
    Capped at cap_db, the value of identical pictures (a finite one keeps means meaningful)."""
    return psnr_of_mse(float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)), cap_db)


def psnr_of_mse(mse: float, cap_db: float = MAX_PSNR_DB) -> float:
    """PSNR in dB of a mean squared error on the 0..255 scale, capped at cap_db (identical pictures)."""
    return cap_db if mse <= 0 else min(cap_db, 10.0 * math.log10(PEAK * PEAK / mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two Y planes over the windows that fit inside the frame (no padding)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (SSIM_WIN, SSIM_WIN), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)

    mu_a, mu_b = blur(a64), blur(b64)
    var_a = blur(a64 * a64) - mu_a * mu_a
    var_b = blur(b64 * b64) - mu_b * mu_b
    cov = blur(a64 * b64) - mu_a * mu_b
    num = (2 * mu_a * mu_b + SSIM_C1) * (2 * cov + SSIM_C2)
    m = num / ((mu_a**2 + mu_b**2 + SSIM_C1) * (var_a + var_b + SSIM_C2))
    r = SSIM_WIN // 2
    return float(m[r:-r, r:-r].mean())


def msssim_weights(side: int) -> list[float]:
    """The standard five weights, or the first ones renormalised when the image is too small.

    pytorch_msssim needs side > (win - 1) * 2 ** (scales - 1): 160 px for five scales at win 11,
    so 256 and 512 use all five; smaller images drop the coarsest scales."""
    n = len(MSSSIM_WEIGHTS)
    while n > 1 and side <= (SSIM_WIN - 1) * 2 ** (n - 1):
        n -= 1
    w = MSSSIM_WEIGHTS[:n]
    return [x / sum(w) for x in w]


def _gauss_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable Gaussian over the windows that fit inside (a 'valid' convolution)."""
    r = len(g) // 2
    return cv2.sepFilter2D(x, cv2.CV_64F, g, g, borderType=cv2.BORDER_REFLECT)[r:-r, r:-r]


def _avg_pool2(x: np.ndarray) -> np.ndarray:
    """torch avg_pool2d(kernel 2, padding = size % 2, zeros counted), as pytorch_msssim downsamples."""
    ph, pw = x.shape[0] % 2, x.shape[1] % 2
    if ph or pw:
        x = np.pad(x, ((ph, ph), (pw, pw)))
    h, w = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
    x = x[:h, :w]
    return 0.25 * (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2])


def ms_ssim_y(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM of two Y planes, pytorch_msssim's algorithm (valid Gaussian windows, relu, weighted product)
    in OpenCV float64: ~15x faster on one CPU thread, equal within 1e-4 (tested)."""
    x, y = a.astype(np.float64), b.astype(np.float64)
    weights = msssim_weights(min(a.shape))
    coords = np.arange(SSIM_WIN, dtype=np.float64) - SSIM_WIN // 2
    g = np.exp(-(coords**2) / (2 * SSIM_SIGMA**2))
    g /= g.sum()
    values = []
    for level in range(len(weights)):
        mu_x, mu_y = _gauss_valid(x, g), _gauss_valid(y, g)
        var_x = _gauss_valid(x * x, g) - mu_x * mu_x
        var_y = _gauss_valid(y * y, g) - mu_y * mu_y
        cov = _gauss_valid(x * y, g) - mu_x * mu_y
        cs_map = (2 * cov + SSIM_C2) / (var_x + var_y + SSIM_C2)
        if level < len(weights) - 1:
            values.append(max(float(cs_map.mean()), 0.0))
            x, y = _avg_pool2(x), _avg_pool2(y)
        else:
            lum = (2 * mu_x * mu_y + SSIM_C1) / (mu_x * mu_x + mu_y * mu_y + SSIM_C1)
            values.append(max(float((lum * cs_map).mean()), 0.0))
    return float(np.prod([v**w for v, w in zip(values, weights, strict=True)]))


def ms_ssim_batch(ref_y: np.ndarray, out_y: np.ndarray) -> np.ndarray:
    """(N, H, W) Y planes -> N MS-SSIM values."""
    return np.array([ms_ssim_y(r, o) for r, o in zip(ref_y, out_y, strict=True)], dtype=np.float64)


def vmaf_available() -> bool:
    try:
        import vmaf_torch  # noqa: F401
    except ImportError:
        return False
    return True


def keypoint_distance(a: np.ndarray | None, b: np.ndarray | None) -> float:
    if a is None or b is None:
        return float("nan")
    return float(np.mean(np.linalg.norm(a[:, :2] - b[:, :2], axis=1)))


@dataclass
class Scores:
    means: dict[str, float]
    per_frame: dict[str, list[float]]
    kp_missing: int
    """Scored frames whose output has no face where the input has one."""


class Reference:
    """The input crops of one clip and everything about them that every codec's score reuses."""

    def __init__(self, crops: list[np.ndarray], scored: list[int], mesh: FaceMesh, use_vmaf: bool = True) -> None:
        self.scored = scored
        self.vmaf_frames = scored[::VMAF_FRAME_SHARE]
        self.y = {i: luma(crops[i]) for i in scored}
        self.landmarks = {i: mesh.landmarks(crops[i]) for i in scored}
        self._mesh = mesh
        self._vmaf = None
        self._motion2: torch.Tensor | None = None
        if use_vmaf and vmaf_available():
            import vmaf_torch

            self._vmaf = vmaf_torch.VMAF(temporal_pooling=False, enable_motion=True, clip_score=True)
            self._vmaf.eval()
            all_y = torch.from_numpy(np.stack([self._limited(luma(c)) for c in crops]))[:, None]
            with torch.no_grad():
                self._motion2 = self._vmaf.compute_motion2(all_y)  # (N, 1), needs the whole sequence

    @staticmethod
    def _limited(y: np.ndarray) -> np.ndarray:
        return y * LIMITED_Y_SCALE + LIMITED_Y_OFFSET

    def vmaf(self, outputs: dict[int, np.ndarray]) -> list[float]:
        if self._vmaf is None or self._motion2 is None:
            return [float("nan")] * len(self.vmaf_frames)
        idx = self.vmaf_frames
        ref = torch.from_numpy(np.stack([self._limited(self.y[i]) for i in idx]))[:, None]
        dist = torch.from_numpy(np.stack([self._limited(luma(outputs[i])) for i in idx]))[:, None]
        with torch.no_grad():
            adm = self._vmaf.compute_adm_score(ref, dist)
            vif = self._vmaf.compute_vif_features(ref, dist)
            score = self._vmaf.predict(adm, self._motion2[idx], vif)
        return [float(v) for v in score[:, 0]]

    def score(self, outputs: dict[int, np.ndarray]) -> Scores:
        idx = self.scored
        out_y = {i: luma(outputs[i]) for i in idx}
        per: dict[str, list[float]] = {
            "psnr_y": [psnr(self.y[i], out_y[i]) for i in idx],
            "ssim": [ssim(self.y[i], out_y[i]) for i in idx],
            "ms_ssim": ms_ssim_batch(np.stack([self.y[i] for i in idx]), np.stack([out_y[i] for i in idx])).tolist(),
            "vmaf": self.vmaf(outputs),
        }
        out_lm = {i: self._mesh.landmarks(outputs[i]) for i in idx}
        per["kp_dist"] = [keypoint_distance(self.landmarks[i], out_lm[i]) for i in idx]
        missing = sum(1 for i in idx if self.landmarks[i] is not None and out_lm[i] is None)
        means = {k: (float(np.nanmean(v)) if np.any(np.isfinite(v)) else float("nan")) for k, v in per.items()}
        return Scores(means, per, missing)


def choose_frames(n: int, count: int, seed: int) -> list[int]:
    """A fixed random subset of frame indices, sorted (all frames when count >= n)."""
    if count >= n:
        return list(range(n))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n, size=count, replace=False))
