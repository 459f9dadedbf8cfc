"""The lean keyframe rig: shape-coded landmarks, both sides build the same rig, hostile input."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from models import sample
from models.face import N_LANDMARKS
from models.mesh import landmarks, shape
from models.mesh.estimator import MeshEstimator
from models.mesh.rig import Rig
from models.types import ModelMismatchError

SIZE = 256
MAX_RIG_BYTES = 500


@pytest.fixture(scope="module")
def keyframe_landmarks() -> tuple[np.ndarray, bytes, np.ndarray]:
    """The sample photo's landmarks (as MediaPipe finds them) and the rig data the estimator sends."""
    image = cv2.resize(sample.photo(), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    est = MeshEstimator(SIZE, keyframe_passes=0)  # static-image mode: raw is what the rig codes
    try:
        raw = est._still.landmarks(image)
        aux = est.set_keyframe(image)
        assert raw is not None and est.rig is not None
        return raw, aux, est.rig.landmarks
    finally:
        est.close()


def test_rig_is_small_and_close_to_the_landmarks(keyframe_landmarks) -> None:
    raw, aux, _ = keyframe_landmarks
    assert aux[0] == shape.FORMAT and len(aux) <= MAX_RIG_BYTES
    err = np.abs(landmarks.decode(aux, SIZE) - raw)
    assert np.sqrt((err[:, :2] ** 2).mean()) < 0.3 and err.max() < 1.5  # px; tracker jitter is larger


def test_both_sides_build_the_same_rig(keyframe_landmarks) -> None:
    _, aux, sender = keyframe_landmarks
    receiver = Rig(landmarks.decode(aux, SIZE), SIZE)
    assert np.array_equal(receiver.landmarks, sender)
    assert np.array_equal(receiver.basis, Rig(sender, SIZE).basis)


def test_older_zlib_rig_still_decodes(keyframe_landmarks) -> None:
    raw, _, _ = keyframe_landmarks
    data = landmarks.encode_zlib(raw)
    assert data[0] == 0x78
    assert np.abs(landmarks.decode(data, SIZE) - raw).max() <= landmarks.LANDMARK_STEP_PX / 2


def test_other_shape_model_is_refused_in_one_line(keyframe_landmarks) -> None:
    _, aux, _ = keyframe_landmarks
    model = shape.shipped()
    assert model is not None
    other = dataclasses.replace(model, coef_std=model.coef_std * 1.01)
    why = r"^keyframe rig: coded with face-shape model [0-9a-f]{8}, this receiver"
    with pytest.raises(ModelMismatchError, match=why):
        shape.decode(aux, SIZE, other)
    with pytest.raises(ModelMismatchError, match="does not have"):
        shape.decode(aux, SIZE, None)


@pytest.mark.parametrize("cut", [1, 5, 9, 10])
def test_truncated_or_garbled_rig_is_a_value_error(keyframe_landmarks, cut: int) -> None:
    _, aux, _ = keyframe_landmarks
    with pytest.raises(ValueError):
        landmarks.decode(aux[:cut], SIZE)
    rng = np.random.default_rng(cut)
    for _ in range(200):
        junk = aux[:5] + bytes(rng.integers(0, 256, 4 * int(rng.integers(1, 30)), dtype=np.uint8))
        try:
            lm = landmarks.decode(junk, SIZE)
        except ValueError:
            continue
        assert lm.shape == (N_LANDMARKS, 3) and np.all(np.isfinite(lm))
