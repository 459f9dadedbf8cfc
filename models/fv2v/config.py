"""Configurations of the fv2v networks, losses and training, one dataclass per code boundary.

Three named configs:

- ``tiny``: 64x64 faces, a few thousand parameters per network. For CPU tests and smoke runs of the
  whole pipeline (prepare -> train -> checkpoint -> profile); it learns little, it only has to run in
  seconds on two cores.
- ``small``: 128x128 faces, 0.31 M parameters (K = 10, 4 ch x 8 depth x 32x32 volume). The largest
  config that trains a usable number of steps on a CPU: one fp32 thread of the 2-core dev machine does
  a batch-4 step (GAN on) in 0.48 s (tiny: 0.28 s, base: 16 s, i.e. ~150 steps in 40 minutes); a
  40-minute run on a shared CPU reached 3588 steps. It proves the training path end to end where no
  GPU is available; it is not a production profile.
- ``base``: 256x256 faces, the production profile. The paper's F volume is 32 ch x 16 depth x 64x64;
  base keeps the 64x64x16 geometry (3D warps need depth resolution) but halves the channels to 16, and
  runs M on a half-resolution 32x32x16 grid (the composition mask is smooth; the warp itself is
  applied at full resolution). This keeps M+G per frame within a ~10 ms H100 bf16 budget and the
  whole model (F, L, H, Δ, M, G; the discriminator is training-only) under 40 MB of fp16 weights.
  Parameter counts and fp16 sizes are printed by ``benchmarks/fv2v_speed.py``; at the time of writing
  base is 8.05 M parameters (16.1 MB fp16) without the discriminator (D: 3.4 M, training only).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class AppearanceConfig:
    """F: source image -> 3D appearance feature volume."""

    base_ch: int = 32
    """Channels of the first 2D convolution; doubled at every downsampling."""
    max_ch: int = 128
    """Cap on the 2D encoder's channels."""
    n_down: int = 2
    """2D downsamplings: the volume's side is image_size / 2**n_down."""
    feat_ch: int = 16
    """C, channels of the feature volume."""
    depth: int = 16
    """D, depth of the feature volume."""
    n_res3d: int = 2
    """3D residual blocks on the volume."""


@dataclass(frozen=True)
class KeypointConfig:
    """L: source image -> K canonical 3D keypoints (softmax expectation over a 3D heatmap)."""

    input_size: int = 64
    """L runs on the image resized to this side (keypoints need no fine detail)."""
    base_ch: int = 32
    """Channels of the first hourglass level."""
    max_ch: int = 256
    """Cap on hourglass channels."""
    n_blocks: int = 4
    """Hourglass levels (downsamplings)."""
    heat_depth: int = 16
    """Depth of the keypoint heatmap volume."""
    temperature: float = 0.1
    """Softmax temperature of the heatmaps: lower = sharper keypoints."""


@dataclass(frozen=True)
class HeadPoseConfig:
    """H: image -> yaw, pitch, roll (binned classification + expectation, Hopenet) and translation."""

    input_size: int = 128
    """H runs on the image resized to this side."""
    base_ch: int = 32
    """Channels of the first stage; doubled at every stage."""
    max_ch: int = 128
    """Cap on channels."""
    n_stages: int = 5
    """Strided residual stages (each halves the resolution)."""
    n_bins: int = 66
    """Angle bins per axis (Hopenet: 66 bins of 3 degrees)."""
    bin_deg: float = 3.0
    """Width of one angle bin, degrees."""


@dataclass(frozen=True)
class ExpressionConfig:
    """Δ: image -> K 3D expression deformations δ."""

    input_size: int = 128
    """Δ runs on the image resized to this side."""
    base_ch: int = 32
    """Channels of the first stage; doubled at every stage."""
    max_ch: int = 128
    """Cap on channels."""
    n_stages: int = 5
    """Strided residual stages (each halves the resolution)."""


@dataclass(frozen=True)
class MotionConfig:
    """M: keypoints + source volume -> composition mask over K+1 warps, occlusion map."""

    compress_ch: int = 4
    """The source volume is compressed to this many channels before it is warped K+1 times."""
    grid_scale: int = 2
    """M runs on the volume downsampled by this factor in height and width (not depth)."""
    base_ch: int = 32
    """Channels of the first 3D hourglass level."""
    max_ch: int = 128
    """Cap on hourglass channels."""
    n_blocks: int = 3
    """3D hourglass levels."""
    sigma: float = 0.01
    """Variance of the Gaussian keypoint heatmaps fed to M, normalized coordinates squared."""
    rotation_jacobian: bool = True
    """Sparse motions use J_k = R_s R_d^-1 (the paper) instead of J_k = I (first-order-model, no J)."""


@dataclass(frozen=True)
class GeneratorConfig:
    """G: warped volume (depth folded into channels) -> image."""

    ch: int = 128
    """Channels of the 2D residual trunk at volume resolution."""
    n_res: int = 6
    """2D residual blocks at volume resolution."""
    min_ch: int = 32
    """Channels never drop below this in the upsampling path."""


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Multi-scale patch discriminator (training only)."""

    n_scales: int = 2
    """Image scales (full, 1/2, ...) with one patch discriminator each."""
    base_ch: int = 64
    """Channels of the first layer; doubled at every layer."""
    max_ch: int = 256
    """Cap on channels."""
    n_layers: int = 4
    """Strided 4x4 layers per scale."""


@dataclass(frozen=True)
class LossConfig:
    """Loss weights and loss-internal constants."""

    l1: float = 10.0
    """Weight of the L1 reconstruction loss."""
    ssim: float = 10.0
    """Weight of (1 - MS-SSIM) (plain SSIM below ssim_min_size)."""
    ssim_min_size: int = 160
    """Images smaller than this use plain SSIM: 5-scale MS-SSIM needs > 160 px."""
    gan: float = 1.0
    """Weight of the generator's hinge GAN loss."""
    feature_matching: float = 10.0
    """Weight of discriminator feature matching."""
    equivariance: float = 10.0
    """Weight of keypoint equivariance under a random affine warp of the driving image."""
    kp_prior: float = 10.0
    """Weight of the keypoint prior (spread + mean depth)."""
    kp_min_dist_sq: float = 0.1
    """Keypoint pairs closer than this (squared, normalized coordinates) are penalized (paper: 0.1)."""
    kp_depth_target: float = 0.33
    """Target mean keypoint depth (paper: 0.33)."""
    head_pose: float = 20.0
    """Weight of the head-pose loss against the teacher angles (per degree-scaled term)."""
    head_pose_reg: float = 1.0
    """Weight of the regression (expectation) term relative to the bin cross-entropy, per radian."""
    deformation: float = 5.0
    """Weight of the L1 prior on δ."""
    eq_max_rot_deg: float = 15.0
    """Equivariance: largest random in-plane rotation, degrees."""
    eq_max_scale: float = 0.1
    """Equivariance: largest random log-free scale change (fraction)."""
    eq_max_shift: float = 0.1
    """Equivariance: largest random shift, normalized coordinates."""
    gan_start_step: int = 0
    """Step from which the GAN and feature-matching losses are on (a warm-up can help small runs)."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimizer and schedule."""

    lr: float = 2e-4
    """Adam learning rate (paper: 2e-4)."""
    beta1: float = 0.5
    """Adam β1 (paper: 0.5)."""
    beta2: float = 0.999
    """Adam β2 (paper: 0.999)."""
    steps: int = 200_000
    """Total optimizer steps (the paper trains 100 epochs of VoxCeleb2 at 256x256)."""
    batch: int = 8
    """Pairs per step per process."""
    log_every: int = 10
    """Steps between lines of RUN/log.jsonl."""
    sample_every: int = 500
    """Steps between PNG sample grids."""
    checkpoint_every: int = 2000
    """Steps between checkpoints."""
    num_workers: int = 2
    """DataLoader worker processes."""


@dataclass(frozen=True)
class Fv2vConfig:
    """A whole fv2v model: architecture sections (must match a checkpoint) + training sections."""

    name: str
    """Config name, recorded in checkpoints."""
    image_size: int
    """Side of the square face crop, pixels."""
    num_kp: int
    """K, number of 3D keypoints; the wire carries 3K expression values."""
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)
    """F."""
    keypoints: KeypointConfig = field(default_factory=KeypointConfig)
    """L."""
    head_pose: HeadPoseConfig = field(default_factory=HeadPoseConfig)
    """H."""
    expression: ExpressionConfig = field(default_factory=ExpressionConfig)
    """Δ."""
    motion: MotionConfig = field(default_factory=MotionConfig)
    """M."""
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    """G."""
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    """D (training only, but saved with training checkpoints)."""
    loss: LossConfig = field(default_factory=LossConfig)
    """Loss weights (training only: free to differ from a checkpoint's)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimizer and schedule (training only: free to differ from a checkpoint's)."""

    def __post_init__(self) -> None:
        side = self.image_size >> self.appearance.n_down
        if side << self.appearance.n_down != self.image_size:
            raise ValueError(f"image_size {self.image_size} is not divisible by 2**{self.appearance.n_down}")
        if side % self.motion.grid_scale:
            raise ValueError(f"volume side {side} is not divisible by motion.grid_scale")
        if self.keypoints.input_size % (1 << self.keypoints.n_blocks):
            raise ValueError("keypoints.input_size must be divisible by 2**keypoints.n_blocks")

    @property
    def volume_side(self) -> int:
        """Height and width of the feature volume."""
        return self.image_size >> self.appearance.n_down

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def architecture(self) -> dict[str, Any]:
        """The part of the config that the weights depend on."""
        d = self.to_dict()
        for key in TRAINING_ONLY:
            d.pop(key)
        return d


TRAINING_ONLY = ("loss", "train")  # sections a checkpoint does not pin


def _tiny() -> Fv2vConfig:
    return Fv2vConfig(
        name="tiny",
        image_size=64,
        num_kp=8,
        appearance=AppearanceConfig(base_ch=8, max_ch=16, n_down=2, feat_ch=4, depth=4, n_res3d=1),
        keypoints=KeypointConfig(input_size=32, base_ch=8, max_ch=32, n_blocks=3, heat_depth=4),
        head_pose=HeadPoseConfig(input_size=32, base_ch=8, max_ch=32, n_stages=3),
        expression=ExpressionConfig(input_size=32, base_ch=8, max_ch=32, n_stages=3),
        motion=MotionConfig(compress_ch=2, grid_scale=1, base_ch=8, max_ch=16, n_blocks=2),
        generator=GeneratorConfig(ch=16, n_res=1, min_ch=8),
        discriminator=DiscriminatorConfig(n_scales=2, base_ch=8, max_ch=32, n_layers=3),
        loss=LossConfig(ssim_min_size=160),
        train=TrainConfig(steps=200, batch=4, sample_every=50, checkpoint_every=100, num_workers=0, log_every=1),
    )


def _small() -> Fv2vConfig:
    return Fv2vConfig(
        name="small",
        image_size=128,
        num_kp=10,
        appearance=AppearanceConfig(base_ch=8, max_ch=32, n_down=2, feat_ch=4, depth=8, n_res3d=1),
        keypoints=KeypointConfig(input_size=32, base_ch=8, max_ch=32, n_blocks=3, heat_depth=8),
        head_pose=HeadPoseConfig(input_size=64, base_ch=8, max_ch=32, n_stages=4),
        expression=ExpressionConfig(input_size=64, base_ch=8, max_ch=32, n_stages=4),
        motion=MotionConfig(compress_ch=2, grid_scale=2, base_ch=8, max_ch=32, n_blocks=2),
        generator=GeneratorConfig(ch=32, n_res=1, min_ch=8),
        discriminator=DiscriminatorConfig(n_scales=2, base_ch=8, max_ch=32, n_layers=3),
        loss=LossConfig(ssim_min_size=160, gan_start_step=500),
        train=TrainConfig(steps=3000, batch=4, log_every=10, sample_every=250, checkpoint_every=250, num_workers=0),
    )


def _base() -> Fv2vConfig:
    return Fv2vConfig(name="base", image_size=256, num_kp=15)


CONFIGS = {"tiny": _tiny, "small": _small, "base": _base}


def get_config(name: str) -> Fv2vConfig:
    """The named config; ValueError listing the names when unknown."""
    if name not in CONFIGS:
        raise ValueError(f"unknown fv2v config {name!r} (known: {', '.join(CONFIGS)})")
    return CONFIGS[name]()
