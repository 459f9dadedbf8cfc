"""What a profile produces and consumes: the per-frame motion parameters, their quantization
steps, "no face", and the Estimator / Renderer contracts a profile implements.

These live in models/ because a profile (models/mesh, models/fv2v) produces them without
knowing the codec; codec/ builds on them (codec.params quantizes, codec.api re-exports).

Angles are in degrees, lengths in units of the crop width, so the wire format does not
depend on the codec resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

# Quantization steps. int8 on the wire, so each range is +-127 steps.
ANGLE_STEP_DEG = 0.5  # +-63.5 deg, beyond what a warp can render anyway
TRANSLATION_STEP = 1.0 / 512.0  # crop widths; 0.5 px at 256x256, range +-0.25 crop
LOG_SCALE_STEP = 0.004  # natural log; range x0.60 .. x1.66
EXPRESSION_STEP = 1.0 / 512.0  # crop widths; 0.5 px at 256x256, range +-0.25 crop
INT8_MAX = 127

POSE_SIZE = 6  # yaw, pitch, roll, tx, ty, log_scale


class NoFaceError(RuntimeError):
    """The image has no usable face."""


class ModelMismatchError(ValueError):
    """Profile data coded with a model this side does not have (another digest, or none): asking
    for it again brings the same data, so the call cannot go on."""


class ProfileError(RuntimeError):
    """A profile that cannot run here (unknown, not in this build, weights missing or for another size)."""


@dataclass(frozen=True)
class QuantSpec:
    """Step sizes shared by sender and receiver; sent in the session header."""

    angle_step: float = ANGLE_STEP_DEG
    """Degrees per step for yaw, pitch and roll."""
    translation_step: float = TRANSLATION_STEP
    """Crop widths per step for tx and ty."""
    log_scale_step: float = LOG_SCALE_STEP
    """Natural-log units per step for the scale."""
    expression_step: float = EXPRESSION_STEP
    """Units per step of each expression coefficient (crop widths for the mesh profile)."""

    def steps(self, n_expr: int) -> np.ndarray:
        """The step of every value of a packed vector, pose first."""
        pose = [self.angle_step] * 3 + [self.translation_step] * 2 + [self.log_scale_step]
        return np.array(pose + [self.expression_step] * n_expr, dtype=np.float64)

    def to_list(self) -> list[float]:
        return [self.angle_step, self.translation_step, self.log_scale_step, self.expression_step]

    @classmethod
    def from_list(cls, values: list[float]) -> QuantSpec:
        if len(values) != 4 or not all(isinstance(v, float | int) and 0 < v < 1e3 for v in values):
            raise ValueError("quantization steps must be 4 positive numbers")
        return cls(*(float(v) for v in values))

    def scaled(self, factor: float) -> QuantSpec:
        """Coarser (factor > 1) or finer steps: the rate knob of the parameter stream."""
        return QuantSpec(*(v * factor for v in self.to_list()))


@dataclass
class FrameParams:
    """Motion of one frame relative to the keyframe."""

    yaw: float = 0.0
    """Head rotation about the vertical axis, degrees."""
    pitch: float = 0.0
    """Head rotation about the horizontal axis, degrees."""
    roll: float = 0.0
    """Head rotation in the image plane, degrees."""
    tx: float = 0.0
    """Horizontal head translation, crop widths."""
    ty: float = 0.0
    """Vertical head translation, crop widths."""
    log_scale: float = 0.0
    """Natural log of the head's size relative to the keyframe."""
    expression: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    """Profile-specific expression coefficients (the mesh profile: keypoint offsets)."""
    references: tuple[int, ...] = ()
    """Per region a profile can draw from a reference picture (the mesh profile: eyes, mouth), the
    bank slot it is drawn from; 0 or absent: the keyframe. Not part of vector(): it travels apart."""

    def vector(self) -> np.ndarray:
        pose = [self.yaw, self.pitch, self.roll, self.tx, self.ty, self.log_scale]
        return np.concatenate([np.array(pose, dtype=np.float64), np.asarray(self.expression, np.float64)])

    @classmethod
    def from_vector(cls, v: np.ndarray) -> FrameParams:
        v = np.asarray(v, dtype=np.float64)
        return cls(*(float(x) for x in v[:POSE_SIZE]), expression=v[POSE_SIZE:].astype(np.float32))


class Estimator(Protocol):
    """Profile part on the sender: face crop -> motion parameters."""

    n_expr: int
    """Length of the expression vector."""

    def set_keyframe(self, image: np.ndarray) -> bytes:
        """Analyse the DECODED keyframe crop; returns profile data sent with it (may be b'').

        Raises NoFaceError when the keyframe has no usable face."""

    def estimate(self, crop: np.ndarray) -> FrameParams | None:
        """Parameters of one crop relative to the keyframe; None when no face is found."""

    def close(self) -> None:
        """Release native resources (MediaPipe graphs, GPU memory); the estimator is not used after."""


class Renderer(Protocol):
    """Profile part on the receiver: keyframe + parameters -> frame."""

    def set_keyframe(self, image: np.ndarray, aux: bytes) -> None:
        """Cache what the keyframe gives (decoded crop, and the sender's profile data).

        Raises ValueError when aux is malformed, ModelMismatchError when another model coded it."""

    def render(self, params: FrameParams) -> np.ndarray:
        """RGB uint8 (size, size, 3) for the given parameters."""


@runtime_checkable
class PreviewRenderer(Renderer, Protocol):
    """A renderer that can draw a frame at lower resolution for less (the sender's keyframe check)."""

    def preview(self, params: FrameParams, scale: int) -> np.ndarray:
        """RGB uint8 (size // scale, size // scale, 3): the frame render() draws, at 1/scale resolution."""


class ReferenceEstimator(Estimator, Protocol):
    """An estimator whose profile can use reference pictures (codec.bank)."""

    def reference_aux(self) -> bytes:
        """Profile data of the last estimated crop as a reference picture (the mesh profile: its
        landmarks, coded like a keyframe's)."""


class ReferenceRenderer(Renderer, Protocol):
    """A renderer that can draw regions of a frame from reference pictures (codec.bank).

    Regions are numbered as the profile defines them (the mesh profile: 0 eyes, 1 mouth)."""

    region_names: tuple[str, ...]
    """The regions, in the order of FrameParams.references and of the regions bit masks."""

    def add_reference(self, slot: int, image: np.ndarray, aux: bytes, regions: int) -> None:
        """Hold a decoded reference picture in `slot` of the bank (replacing what the slot held);
        `regions`: bit mask of the regions it is for. Raises ValueError when aux or the picture is
        unusable. The bank outlives keyframes: a reference serves every later keyframe's frames."""

    def reference_picture(
        self, crop: np.ndarray, aux: bytes, regions: int, background: np.ndarray | None = None
    ) -> np.ndarray:
        """What the sender encodes for a reference of `crop`: only the regions' pixels matter; the
        rest shows `background` (the decoded keyframe, which a predicted picture codes as skipped),
        or a flat fill where None (cheapest for an intra picture)."""

    def region_errors(self, params: FrameParams, crop: np.ndarray, regions: int = -1) -> list[dict[int, float]]:
        """Per region, slot -> the error (mean squared luma) against `crop` of the frame for these
        parameters with that region drawn from that slot (0: the keyframe; every held reference
        that covers the region): the sender draws each region from the one that serves best.
        Only the regions in the bit mask `regions` are measured (default all); the others are {}."""
