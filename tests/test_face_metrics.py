"""benchmarks/harness/face_metrics.py: dlib landmarks, identity and expression on a real clip."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks.expression_eval import sheet_candidates
from benchmarks.harness import face_metrics as fm

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CLIP = DATA / "raw" / "CVPR2022-DaGAN" / "driving.mp4"  # 256x256 face crop, talking, head tilts

needs_dlib = pytest.mark.skipif(not fm.available(), reason="dlib-bin / face-recognition-models not installed")
needs_clip = pytest.mark.skipif(not CLIP.is_file(), reason=f"real clip absent: {CLIP} (see shared/data/MANIFEST.md)")
CLIP_FRAMES = 40
SCORED = range(0, CLIP_FRAMES, 5)


def test_tracking_correlation_and_error() -> None:
    ref = [0.0, 1.0, 2.0, 3.0, 4.0]
    corr, mae = fm.tracking(ref, [2 * x + 1 for x in ref])
    assert corr == pytest.approx(1.0) and mae == pytest.approx(3.0)  # |x + 1| averaged over 0..4
    assert fm.tracking(ref, [5.0] * 5)[0] == 0.0  # a frozen output tracks nothing
    assert math.isnan(fm.tracking([1.0] * 5, ref)[0])  # an input that never moves: nothing to track
    corr, _ = fm.tracking([*ref, math.nan], [*ref[::-1], 7.0])  # NaN frames are left out
    assert corr == pytest.approx(-1.0)


def _face_from_points(pts: np.ndarray) -> fm.Face:
    return fm.Face(pts.astype(np.float32), (0, 0, 256, 256))


@pytest.fixture(scope="module")
def clip_frames() -> dict[int, np.ndarray]:
    import av

    with av.open(str(CLIP)) as c:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(CLIP_FRAMES), c.decode(video=0), strict=False)]
    return {i: frames[i] for i in SCORED}


@pytest.fixture(scope="module")
def analyzer() -> fm.FaceAnalyzer:
    return fm.FaceAnalyzer()


@needs_dlib
@needs_clip
def test_features_follow_the_landmarks_and_ignore_roll_and_scale(clip_frames, analyzer) -> None:
    face = analyzer.detect(clip_frames[0])
    assert face is not None and face.detected and face.landmarks.shape == (fm.N_LANDMARKS, 2)
    base = fm.expression_features(face)
    assert 0.1 < base["eye_open"] < 0.5  # open eyes: EAR ~0.2-0.35
    centre = face.landmarks.mean(0)
    a = math.radians(20)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    turned = fm.expression_features(_face_from_points((face.landmarks - centre) @ rot.T * 1.7 + centre))
    for f in fm.EXPRESSION_FEATURES:
        assert turned[f] == pytest.approx(base[f], rel=1e-4), f
    # a frown: inner brows 3 px closer together and lowered; a mouth opening 6 px wider
    pts = face.landmarks.copy()
    axis = pts[list(fm.LEFT_EYE)].mean(0) - pts[list(fm.RIGHT_EYE)].mean(0)
    iod = float(np.linalg.norm(axis))
    cos_roll = float(axis[0]) / iod  # an image-vertical shift of d moves d * cos(roll) along the face's vertical
    pts[21, 0] += 1.5
    pts[22, 0] -= 1.5
    pts[list(fm.RIGHT_BROW) + list(fm.LEFT_BROW), 1] += 2.0
    pts[[65, 66, 67], 1] += 6.0
    frown = fm.expression_features(_face_from_points(pts))
    assert frown["brow_gap"] < base["brow_gap"]
    assert frown["brow_raise"] == pytest.approx(base["brow_raise"] - 2.0 * cos_roll / iod)
    assert frown["mouth_open"] == pytest.approx(base["mouth_open"] + 6.0 * cos_roll / iod)
    assert frown["eye_open"] == pytest.approx(base["eye_open"])


@needs_dlib
@needs_clip
def test_scores_identical_frozen_and_smeared_outputs(clip_frames, analyzer) -> None:
    import cv2

    ref = fm.FaceReference(analyzer, clip_frames)
    assert sorted(ref.embeddings) == sorted(clip_frames)[:: fm.IDENTITY_SHARE]

    same = ref.score(clip_frames)
    assert same.face_missing == 0 and same.frames == len(clip_frames)
    assert same.means["akd68"] == 0.0 and same.means["id_dist"] == pytest.approx(0.0, abs=1e-6)
    for f in fm.EXPRESSION_FEATURES:
        assert same.means[f"{f}_mae"] == 0.0
        assert same.means[f"{f}_corr"] == pytest.approx(1.0) or math.isnan(same.means[f"{f}_corr"])
    assert set(fm.FACE_METRICS) == set(same.means)

    first = next(iter(clip_frames.values()))
    frozen = ref.score(dict.fromkeys(clip_frames, first))
    assert frozen.means["akd68"] > same.means["akd68"]
    assert frozen.means["mouth_open_corr"] == 0.0  # talking input, still output
    assert frozen.means["id_dist"] < fm.SAME_PERSON_DISTANCE  # still the same person

    # 16x16 and back: a smear. Its identity is far off, whether or not a face is still found in it.
    smear = {
        i: cv2.resize(cv2.resize(f, (16, 16), interpolation=cv2.INTER_AREA), (256, 256), interpolation=cv2.INTER_LINEAR)
        for i, f in clip_frames.items()
    }
    s = ref.score(smear)
    assert s.means["id_dist"] > 2 * frozen.means["id_dist"]
    assert 0 <= s.face_missing <= s.frames
    assert math.isfinite(s.means["id_dist"])  # missing faces are embedded at the input's landmarks

    grey = ref.score(dict.fromkeys(clip_frames, np.full_like(first, 128)))
    assert grey.face_missing == grey.frames and grey.means["face_missing"] == 1.0
    assert math.isnan(grey.means["akd68"])


def test_missing_models_is_one_clear_error(tmp_path: Path) -> None:
    if not fm.available():
        with pytest.raises(fm.FaceModelsMissing):
            fm.FaceAnalyzer()
        return
    with pytest.raises(fm.FaceModelsMissing, match=r"shape_predictor_68_face_landmarks\.dat is missing"):
        fm.FaceAnalyzer(tmp_path)


def test_contact_sheet_frown_needs_lowered_brows() -> None:
    """The frown row takes the frame whose inner brows come together AND come down, not one where
    only the gap narrows (a smile's cheek raise does that to the dlib brow points)."""
    n = 20
    series = {
        "index": list(range(n)),
        "brow_gap": [0.5] * n,
        "brow_raise": [0.3] * n,
        "eye_open": [0.3] * n,
        "mouth_open": [0.0] * n,
        "gaze_x": [0.0] * n,
    }
    series["brow_gap"][4], series["brow_raise"][4] = 0.30, 0.32  # narrower gap, brows up: not a frown
    series["brow_gap"][9], series["brow_raise"][9] = 0.42, 0.25  # narrower and lower: the frown
    series["mouth_open"][13] = 0.2
    rows = {row: i for row, _, i in sheet_candidates("clip", series)}
    assert rows["frown"] == 9
    assert rows["mouth open"] == 13
