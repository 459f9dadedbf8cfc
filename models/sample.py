"""The embedded demo clip: a public-domain portrait animated with scripted motion.

The photo is scikit-image's `astronaut` (a NASA portrait, public domain), cropped. It is
animated with the mesh renderer itself, with head turns, nods, tilts, talking and blinks
written as smooth functions of time, so the demo needs no third-party footage.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources

import cv2
import numpy as np

from models.face import FaceMesh
from models.mesh import gaussian
from models.mesh.renderer import MeshRenderer
from models.mesh.rig import Rig
from models.types import FrameParams

SAMPLE_FPS = 25.0
SAMPLE_SECONDS = 8.0
YAW_DEG, PITCH_DEG, ROLL_DEG = 14.0, 7.0, 5.0  # amplitudes of the scripted head motion
TALK_HZ = 2.7  # syllable rate of the mouth motion
BLINK_EVERY_S = 2.9


def photo() -> np.ndarray:
    """The sample portrait, RGB uint8."""
    data = resources.files("models").joinpath("assets/astronaut.jpg").read_bytes()
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _coeff(name: str) -> int | None:
    names = [k.name for k in gaussian.KEYPOINTS]
    return names.index(name) if name in names else None


def script(t: float, size: int) -> FrameParams:
    """Scripted parameters at time t (seconds), for a photo of `size` pixels."""
    expr = np.zeros(gaussian.N_EXPR, np.float32)
    talk = max(0.0, np.sin(2 * np.pi * TALK_HZ * t)) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.4 * t) ** 2)
    blink_phase = (t % BLINK_EVERY_S) / 0.18  # a blink lasts ~0.18 s
    blink = np.sin(np.pi * blink_phase) if blink_phase < 1 else 0.0
    px = 1.0 / size  # expression coefficients are in crop widths
    for name, value in (
        ("jaw_y", 9 * talk * px),
        ("lower_lip_y", 5 * talk * px),
        ("right_lid_y", 5 * blink * px),
        ("left_lid_y", 5 * blink * px),
        ("mouth_left_x", 2 * np.sin(2 * np.pi * 0.3 * t) * px),
        ("mouth_right_x", -2 * np.sin(2 * np.pi * 0.3 * t) * px),
    ):
        j = _coeff(name)
        if j is not None:
            expr[j] = value
    return FrameParams(
        yaw=YAW_DEG * np.sin(2 * np.pi * t / 4.0),
        pitch=PITCH_DEG * np.sin(2 * np.pi * t / 3.1),
        roll=ROLL_DEG * np.sin(2 * np.pi * t / 5.3),
        tx=0.02 * np.sin(2 * np.pi * t / 6.0),
        ty=0.01 * np.sin(2 * np.pi * t / 3.7),
        expression=expr,
    )


def frames(seconds: float = SAMPLE_SECONDS, fps: float = SAMPLE_FPS) -> Iterator[np.ndarray]:
    """RGB frames of the animated sample (the photo's size)."""
    image = photo()
    size = image.shape[0]
    mesh = FaceMesh(video=False)
    lm = mesh.landmarks(image)
    mesh.close()
    if lm is None:  # the embedded photo always has a face; guard against a broken asset
        raise RuntimeError("the embedded sample photo has no detectable face")
    model = gaussian.GaussianModel()  # the script speaks in its named coefficients (jaw, lids...)
    renderer = MeshRenderer(size, model=model)
    renderer.set_rig(Rig(lm, size, model), image)
    for i in range(int(round(seconds * fps))):
        yield renderer.render(script(i / fps, size))
