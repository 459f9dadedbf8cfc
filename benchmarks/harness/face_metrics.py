"""What a viewer sees of a face: landmarks, identity and expression with dlib, independent of MediaPipe.

dlib's models come from the PyPI packages `dlib-bin` (the library) and `face-recognition-models`
(the weights): the HOG frontal-face detector, the 68-point landmark predictor (iBUG 300-W:
non-commercial, so this is an evaluation tool only, never part of the package) and the
face-recognition ResNet (128-d embedding; dlib's same-person threshold is 0.6).

    analyzer = FaceAnalyzer()                       # loads the models once (~0.3 s)
    ref = FaceReference(analyzer, input_crops)      # {frame index: RGB uint8}, detections cached
    s = ref.score(output_crops)                     # same keys -> FaceScores
    s.means["akd68"], s.means["id_dist"], s.means["brow_gap_corr"], s.face_missing

Per frame: AKD68 = mean pixel distance of the 68 landmarks, each picture detected on its own (an
output without a detectable face is counted in `face_missing` and left out of the AKD mean);
identity distance = Euclidean distance of the embeddings (an output without a detectable face is
embedded at the input's landmarks instead, so a smear still gets a distance, never a pass).
Expression features per picture (EXPRESSION_FEATURES), normalised by the distance of the eye
centres so that scale cancels; per clip their correlation over time between input and output and
their mean absolute error.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MODELS_PACKAGE = "face_recognition_models"  # PyPI face-recognition-models: dlib's weights as data
PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
RECOGNIZER_FILE = "dlib_face_recognition_resnet_model_v1.dat"
N_LANDMARKS = 68
EMBEDDING_DIM = 128
SAME_PERSON_DISTANCE = 0.6  # dlib's threshold for its embedding (LFW)
DETECT_UPSAMPLE = (0, 1)  # try at native size first (5 ms at 256 px), then 2x (25 ms) for small faces
MIN_CORR_FRAMES = 4  # fewer frames with a face on both sides: no correlation
MIN_FEATURE_STD = 1e-6  # an input feature that does not move has no correlation to track
IDENTITY_SHARE = 2  # FaceReference embeds every 2nd scored frame by default (80 ms each)

# 68-point indices (iBUG 300-W order, 0-based)
RIGHT_BROW, LEFT_BROW = range(17, 22), range(22, 27)  # image left / image right, subject's right / left
RIGHT_EYE, LEFT_EYE = range(36, 42), range(42, 48)
INNER_BROW = (21, 22)
INNER_LIPS = ((61, 67), (62, 66), (63, 65))  # upper / lower inner-lip pairs

EXPRESSION_FEATURES = ("brow_raise", "brow_gap", "eye_open", "mouth_open")
"""brow_raise: height of the brows above the eye centres; brow_gap: inner-brow distance (a frown
narrows it); eye_open: eye aspect ratio (Soukupová & Čech 2016), mean of both eyes; mouth_open:
inner-lip gap along the face's vertical (signed: ~0 when closed). All but eye_open in units of the
eye-centre distance."""


class FaceModelsMissing(RuntimeError):
    """dlib or its weights are not installed."""


def models_dir() -> Path:
    """Where face-recognition-models keeps dlib's weights (found without importing the package,
    whose __init__ needs pkg_resources, gone from recent setuptools)."""
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FaceModelsMissing("face-recognition-models is not installed (pip install face-recognition-models)")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def available() -> bool:
    """dlib and its weights can be loaded here."""
    try:
        import dlib  # noqa: F401

        d = models_dir()
    except (ImportError, FaceModelsMissing):
        return False
    return (d / PREDICTOR_FILE).is_file() and (d / RECOGNIZER_FILE).is_file()


@dataclass(frozen=True)
class Face:
    """One face in one picture, as dlib sees it."""

    landmarks: np.ndarray
    """(68, 2) float32 pixel x, y in iBUG 300-W order."""
    box: tuple[int, int, int, int]
    """Detector box x0, y0, x1, y1 (pixels)."""
    detected: bool = True
    """False: the detector found nothing; the landmarks were placed in a box from elsewhere."""


class FaceAnalyzer:
    """dlib's detector, 68-point predictor and recognition network, loaded once."""

    def __init__(self, directory: Path | None = None) -> None:
        try:
            import dlib
        except ImportError as exc:
            raise FaceModelsMissing("dlib is not installed (pip install dlib-bin)") from exc
        d = directory or models_dir()
        for f in (PREDICTOR_FILE, RECOGNIZER_FILE):
            if not (d / f).is_file():
                raise FaceModelsMissing(f"{d / f} is missing (pip install face-recognition-models)")
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(d / PREDICTOR_FILE))
        self._recognizer = dlib.face_recognition_model_v1(str(d / RECOGNIZER_FILE))

    def detect(self, rgb: np.ndarray) -> Face | None:
        """The largest face the detector finds (RGB uint8 (H, W, 3)), with its 68 landmarks; None if none."""
        img = np.ascontiguousarray(rgb, dtype=np.uint8)
        for up in DETECT_UPSAMPLE:
            rects = self._detector(img, up)
            if len(rects):
                r = max(rects, key=lambda r: r.area())
                return self._shape(img, (r.left(), r.top(), r.right(), r.bottom()), detected=True)
        return None

    def landmarks_in(self, rgb: np.ndarray, box: tuple[int, int, int, int]) -> Face:
        """68 landmarks placed inside a given box (detected=False): for aligning an output with no face."""
        return self._shape(np.ascontiguousarray(rgb, dtype=np.uint8), box, detected=False)

    def embedding(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        """(128,) float32 identity embedding of the face, aligned by its landmarks."""
        img = np.ascontiguousarray(rgb, dtype=np.uint8)
        shape = self._full_object(face)
        return np.asarray(self._recognizer.compute_face_descriptor(img, shape), dtype=np.float32)

    def _shape(self, img: np.ndarray, box: tuple[int, int, int, int], detected: bool) -> Face:
        rect = self._dlib.rectangle(*box)
        s = self._predictor(img, rect)
        pts = np.array([(p.x, p.y) for p in s.parts()], dtype=np.float32)
        return Face(pts, box, detected)

    def _full_object(self, face: Face) -> object:
        d = self._dlib
        pts = [d.point(int(round(x)), int(round(y))) for x, y in face.landmarks]
        return d.full_object_detection(d.rectangle(*face.box), pts)


def akd(ref: Face | None, out: Face | None) -> float:
    """Mean 2-D distance (px) of the 68 landmarks; NaN where either picture has no detected face."""
    if ref is None or out is None or not ref.detected or not out.detected:
        return float("nan")
    return float(np.mean(np.linalg.norm(ref.landmarks - out.landmarks, axis=1)))


def identity_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance of two embeddings (same person below SAME_PERSON_DISTANCE)."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


def expression_features(face: Face) -> dict[str, float]:
    """EXPRESSION_FEATURES of one face, in a head-roll-free frame (x along the eye line)."""
    p = face.landmarks.astype(np.float64)
    eye_r, eye_l = p[list(RIGHT_EYE)].mean(0), p[list(LEFT_EYE)].mean(0)
    axis = eye_l - eye_r
    iod = float(np.linalg.norm(axis))
    if iod < 1e-6:
        return dict.fromkeys(EXPRESSION_FEATURES, float("nan"))
    ux = axis / iod
    down = np.array([-ux[1], ux[0]])  # image y grows downwards

    def height_above(points: range, eye: np.ndarray) -> float:
        return float(np.mean((eye - p[list(points)]) @ down))

    def ear(eye: range) -> float:
        e = p[list(eye)]
        vertical = np.linalg.norm(e[1] - e[5]) + np.linalg.norm(e[2] - e[4])
        return float(vertical / (2.0 * max(np.linalg.norm(e[0] - e[3]), 1e-6)))

    return {
        "brow_raise": (height_above(RIGHT_BROW, eye_r) + height_above(LEFT_BROW, eye_l)) / (2 * iod),
        "brow_gap": float(np.linalg.norm(p[INNER_BROW[0]] - p[INNER_BROW[1]])) / iod,
        "eye_open": (ear(RIGHT_EYE) + ear(LEFT_EYE)) / 2,
        "mouth_open": float(np.mean([(p[lo] - p[up]) @ down for up, lo in INNER_LIPS])) / iod,
    }


def frown_strength(brow_gap: np.ndarray, brow_raise: np.ndarray) -> np.ndarray:
    """Per frame of a clip, how much it frowns: the inner brows narrower AND lower than the clip's
    medians (the sum of both, in the features' units), NaN where they are not, or everywhere when
    fewer than 4 frames have a face. A narrower gap alone is also what a smile's cheek raise or a
    turned head does to dlib's brow points."""
    gap, low = np.asarray(brow_gap, np.float64), np.asarray(brow_raise, np.float64)
    if min(np.isfinite(gap).sum(), np.isfinite(low).sum()) < 4:
        return np.full(len(gap), np.nan)
    narrower, lower = np.nanmedian(gap) - gap, np.nanmedian(low) - low
    return np.where((narrower > 0) & (lower > 0), narrower + lower, np.nan)


def tracking(ref: Sequence[float], out: Sequence[float]) -> tuple[float, float]:
    """(Pearson correlation over time, mean absolute error) of one feature, over the frames where both
    are finite. Correlation is NaN with fewer than MIN_CORR_FRAMES frames or an input that does not move,
    and 0 for an output that does not move while the input does (a frozen face tracks nothing)."""
    r, o = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    ok = np.isfinite(r) & np.isfinite(o)
    r, o = r[ok], o[ok]
    if len(r) == 0:
        return float("nan"), float("nan")
    mae = float(np.mean(np.abs(r - o)))
    if len(r) < MIN_CORR_FRAMES or r.std() < MIN_FEATURE_STD:
        return float("nan"), mae
    if o.std() < MIN_FEATURE_STD:
        return 0.0, mae
    return float(np.corrcoef(r, o)[0, 1]), mae


def expression_fidelity(
    ref: Sequence[dict[str, float] | None], out: Sequence[dict[str, float] | None]
) -> dict[str, tuple[float, float]]:
    """Per feature (correlation, mean absolute error) between two aligned sequences of feature dicts
    (None where a picture has no face)."""
    res = {}
    for f in EXPRESSION_FEATURES:
        rs = [d[f] if d is not None else math.nan for d in ref]
        os_ = [d[f] if d is not None else math.nan for d in out]
        res[f] = tracking(rs, os_)
    return res


FACE_METRICS = ("akd68", "face_missing", "id_dist", *(f"{f}_{k}" for f in EXPRESSION_FEATURES for k in ("corr", "mae")))
"""Keys of FaceScores.means. face_missing is the share of scored frames with a face in the input
and none detected in the output."""
HIGHER_IS_BETTER = {m: m.endswith("_corr") for m in FACE_METRICS}
UNITS = {m: ("px" if m == "akd68" else "") for m in FACE_METRICS}


@dataclass
class FaceScores:
    """Face metrics of one output sequence against its reference."""

    means: dict[str, float]
    """FACE_METRICS -> value over the scored frames (NaN where undefined)."""
    per_frame: dict[str, list[float]]
    """akd68 and id_dist per scored frame (NaN where undefined), and out_<feature> per scored frame."""
    face_missing: int
    """Scored frames whose input has a face and whose output has none the detector finds."""
    frames: int
    """Scored frames whose input has a face."""


@dataclass
class FaceReference:
    """The input crops of one clip and their dlib analysis, computed once for every codec's score.

    frames: {frame index: RGB uint8 crop}; identity_frames: the subset embedded (default every
    IDENTITY_SHARE-th of the sorted indices)."""

    analyzer: FaceAnalyzer
    frames: dict[int, np.ndarray]
    identity_frames: list[int] | None = None
    faces: dict[int, Face | None] = field(init=False)
    features: dict[int, dict[str, float] | None] = field(init=False)
    embeddings: dict[int, np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        idx = sorted(self.frames)
        if self.identity_frames is None:
            self.identity_frames = idx[::IDENTITY_SHARE]
        self.faces = {i: self.analyzer.detect(self.frames[i]) for i in idx}
        self.features = {i: expression_features(f) if f else None for i, f in self.faces.items()}
        self.embeddings = {}
        for i in self.identity_frames:
            face = self.faces.get(i)
            if face is not None:
                self.embeddings[i] = self.analyzer.embedding(self.frames[i], face)

    @property
    def ref_series(self) -> dict[str, list[float]]:
        """Input feature values per scored frame (NaN without a face)."""
        idx = sorted(self.frames)
        return {f: [self.features[i][f] if self.features[i] else math.nan for i in idx] for f in EXPRESSION_FEATURES}

    def score(self, outputs: dict[int, np.ndarray]) -> FaceScores:
        """Score output crops (same frame indices and size as the reference)."""
        idx = sorted(self.frames)
        out_faces = {i: self.analyzer.detect(outputs[i]) for i in idx}
        akds = [akd(self.faces[i], out_faces[i]) for i in idx]
        ids = []
        for i in idx:
            if i not in self.embeddings:
                ids.append(math.nan)
                continue
            face = out_faces[i]
            if face is None:  # no face found: embed at the input's landmarks, where the face should be
                face = self.analyzer.landmarks_in(outputs[i], self.faces[i].box)  # type: ignore[union-attr]
            ids.append(identity_distance(self.embeddings[i], self.analyzer.embedding(outputs[i], face)))
        out_feats = [expression_features(out_faces[i]) if out_faces[i] else None for i in idx]
        fidelity = expression_fidelity([self.features[i] for i in idx], out_feats)
        with_face = [i for i in idx if self.faces[i] is not None]
        missing = sum(1 for i in with_face if out_faces[i] is None)
        means: dict[str, float] = {
            "akd68": _nanmean(akds),
            "face_missing": missing / len(with_face) if with_face else math.nan,
            "id_dist": _nanmean(ids),
        }
        for f, (corr, mae) in fidelity.items():
            means[f"{f}_corr"], means[f"{f}_mae"] = corr, mae
        per_frame: dict[str, list[float]] = {"akd68": akds, "id_dist": ids}
        for f in EXPRESSION_FEATURES:
            per_frame[f"out_{f}"] = [d[f] if d else math.nan for d in out_feats]
        return FaceScores(means, per_frame, missing, len(with_face))


def _nanmean(xs: Sequence[float]) -> float:
    v = [x for x in xs if math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan
