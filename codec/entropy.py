"""Entropy coding of the parameter stream: parametric probability models + constriction's range coder.

A message carries 1..MAX_BATCH consecutive frames. The first is coded on its own ("intra": relative
to the keyframe only), each later one against the frame before it in the same message ("delta"), so
every message decodes by itself and a lost one never touches another.

Per value and context the model is a quantized distribution (Gaussian, Laplace or Cauchy) whose
mean is predicted from the values already coded in the same frame (a lower-triangular linear
predictor; in the delta context, from the deltas already coded) and whose scale is in physical units
(degrees, crop widths): dividing by the session's quantization step gives the scale in steps, so one
model serves every --quant-scale. Models are fitted on real clips by benchmarks/fit_entropy.py and
shipped as JSON next to this module (entropy_models/), keyed by (profile, n_expr, basis id); the
sender puts the model it uses in the session header (Packed.to_bytes, ~0.3-1 KB once per call), so
a receiver never needs the same file, and a sender without a matching file uses generic(n_expr).

Determinism: both sides must feed the coder bit-identical model parameters. Predicted means are
computed in integers (Q12 predictor x integer symbols) and scales are float16 values, so the only
floating-point work is constriction's own (one pinned version on both sides).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import constriction
import numpy as np

from codec.params import INT8_MAX, POSE_SIZE, QuantSpec

MODEL_DIR = Path(__file__).resolve().parent / "entropy_models"
MODEL_FORMAT = 1
MAX_BATCH = 4  # frames per message
GAUSSIAN, LAPLACE, CAUCHY = 0, 1, 2
FAMILIES = (GAUSSIAN, LAPLACE, CAUCHY)
CONTEXTS = ("intra", "delta")
PREDICT_BITS = 12  # predictor weights in Q12 fixed point
MAX_PREDICT = 8.0  # |weight| bound (in units of the default steps)
MAX_PREDICTED = 64  # values beyond this index are predicted from nothing (keeps the header small)
MIN_SCALE_STEPS = 0.05  # a scale below this many steps would make one symbol certain
TIME_SCALE_MS = 3.0  # Laplace scale of a frame's capture-time jitter around the nominal period
MAX_TIME_DEV_MS = 2000  # frames in one message are at most this far off the nominal spacing
NAMES_POSE = ("yaw", "pitch", "roll", "tx", "ty", "log_scale")
# Generic model (no fitted file for this estimator): scales in physical units, measured on the mesh
# profile's real clips and rounded up (see entropy_models/*.json for the fitted ones).
GENERIC_INTRA = (5.0, 4.0, 3.0, 0.03, 0.02, 0.02)
GENERIC_DELTA = (0.8, 0.8, 0.5, 0.004, 0.004, 0.004)
GENERIC_EXPR_INTRA = 0.008
GENERIC_EXPR_DELTA = 0.0025


class EntropyError(ValueError):
    """Bytes that are not a valid coded message (or model) for this session; one line for the user."""


@dataclass(frozen=True)
class Context:
    """How the values of one frame are modelled in one context (intra or delta)."""

    family: tuple[int, ...]
    """Per value: GAUSSIAN, LAPLACE or CAUCHY."""
    scale: tuple[float, ...]
    """Per value: the distribution's scale in physical units (std, b, or gamma), float16-exact."""
    predict: tuple[int, ...] = ()
    """Lower triangle (row-major, i > j, i < MAX_PREDICTED) of the Q12 predictor in default-step units;
    empty: the mean is 0 (intra) or the previous frame (delta)."""


@dataclass(frozen=True)
class Model:
    """A parameter model: what both sides need to code one session's values."""

    n_expr: int
    """Expression values per frame."""
    intra: Context
    """First frame of a message."""
    delta: Context
    """Later frames of a message, against the frame before."""
    name: str = "generic"
    """Where it comes from: 'generic' or the fitted file's key."""
    provenance: dict = field(default_factory=dict, compare=False)
    """How it was fitted (clips, frames, split, date); not sent."""

    @property
    def n(self) -> int:
        return POSE_SIZE + self.n_expr

    def model_id(self) -> str:
        """Short digest of what is sent: two models with the same id code identically."""
        return hashlib.sha256(self.to_bytes()).hexdigest()[:12]

    def to_bytes(self) -> bytes:
        """Compact form for the session header."""
        out = bytearray([MODEL_FORMAT, self.n_expr])
        for c in (self.intra, self.delta):
            out += bytes(c.family)
            out += np.asarray(c.scale, "<f2").tobytes()
            out += len(c.predict).to_bytes(2, "little") + np.asarray(c.predict, "<i2").tobytes()
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes, n_expr: int) -> Model:
        """Parse a header's model; raises EntropyError on anything malformed."""
        if len(data) < 2 or data[0] != MODEL_FORMAT or data[1] != n_expr:
            raise EntropyError("malformed header: entropy model does not match the expression size")
        n, pos, ctxs = POSE_SIZE + n_expr, 2, []
        n_pred = _n_predict(n)
        for _ in CONTEXTS:
            if len(data) < pos + 3 * n + 2:
                raise EntropyError("malformed header: entropy model truncated")
            family = tuple(data[pos : pos + n])
            scale = np.frombuffer(data[pos + n : pos + 3 * n], "<f2").astype(np.float64)
            pos += 3 * n
            k = int.from_bytes(data[pos : pos + 2], "little")
            pos += 2
            if k not in (0, n_pred) or len(data) < pos + 2 * k:
                raise EntropyError("malformed header: entropy model predictor size")
            predict = tuple(int(v) for v in np.frombuffer(data[pos : pos + 2 * k], "<i2"))
            pos += 2 * k
            if any(f not in FAMILIES for f in family) or not np.all(np.isfinite(scale) & (scale > 0)):
                raise EntropyError("malformed header: entropy model values")
            ctxs.append(Context(family, tuple(float(s) for s in scale), predict))
        if pos != len(data):
            raise EntropyError("malformed header: entropy model has trailing bytes")
        return cls(n_expr, ctxs[0], ctxs[1], name="header")


def _n_predict(n: int) -> int:
    m = min(n, MAX_PREDICTED)
    return m * (m - 1) // 2


def _f16(values: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(values, np.float64).astype("<f2").astype(np.float64))


def generic(n_expr: int) -> Model:
    """A model for any estimator: independent values, Laplace, typical physical scales."""
    n = POSE_SIZE + n_expr
    intra = Context((LAPLACE,) * n, _f16(np.array(GENERIC_INTRA + (GENERIC_EXPR_INTRA,) * n_expr)))
    delta = Context((LAPLACE,) * n, _f16(np.array(GENERIC_DELTA + (GENERIC_EXPR_DELTA,) * n_expr)))
    return Model(n_expr, intra, delta)


def _file(profile: str, n_expr: int, basis: str, folder: Path = MODEL_DIR) -> Path:
    return folder / f"{profile}-{n_expr}-{basis}.json"


def save(model: Model, folder: Path = MODEL_DIR) -> Path:
    profile, basis = model.name.split("/", 1) if "/" in model.name else ("mesh", model.name)
    path = _file(profile, model.n_expr, basis, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": MODEL_FORMAT,
        "profile": profile,
        "n_expr": model.n_expr,
        "basis": basis,
        "model_id": model.model_id(),
        "values": list(NAMES_POSE) + [f"expr{i}" for i in range(model.n_expr)],
        "units": "scale: degrees (yaw, pitch, roll), crop widths (tx, ty, expression), natural log (scale); "
        "predict: Q12 weights in units of the default quantization steps",
        "families": "0 Gaussian (std), 1 Laplace (b), 2 Cauchy (gamma)",
        "provenance": model.provenance,
    }
    for name, c in zip(CONTEXTS, (model.intra, model.delta), strict=True):
        doc[name] = {"family": list(c.family), "scale": list(c.scale), "predict": list(c.predict)}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def load(profile: str, n_expr: int, basis: str, folder: Path = MODEL_DIR) -> Model:
    """The fitted model for this estimator (profile, expression size, basis id), or generic(n_expr)."""
    path = _file(profile, n_expr, basis, folder)
    if not path.is_file():
        return generic(n_expr)
    doc = json.loads(path.read_text())
    ctx = [Context(tuple(doc[c]["family"]), tuple(doc[c]["scale"]), tuple(doc[c]["predict"])) for c in CONTEXTS]
    return Model(n_expr, ctx[0], ctx[1], name=f"{profile}/{basis}", provenance=doc.get("provenance", {}))


# -- coding ----------------------------------------------------------------------------------------
_MODELS = {
    GAUSSIAN: constriction.stream.model.QuantizedGaussian(-INT8_MAX, INT8_MAX),
    LAPLACE: constriction.stream.model.QuantizedLaplace(-INT8_MAX, INT8_MAX),
    CAUCHY: constriction.stream.model.QuantizedCauchy(-INT8_MAX, INT8_MAX),
}
_COUNT = constriction.stream.model.Uniform(MAX_BATCH)
_TIME = constriction.stream.model.QuantizedLaplace(-MAX_TIME_DEV_MS, MAX_TIME_DEV_MS)


class Coder:
    """One session's coder: a model, the quantization steps and the nominal frame period."""

    def __init__(self, model: Model, quant: QuantSpec, fps: float) -> None:
        self.model, self.n = model, model.n
        steps = quant.steps(model.n_expr)
        default = QuantSpec().steps(model.n_expr)
        self.period_ms = 1000.0 / fps
        self._scales = []
        self._weights = []
        rel = steps / default  # predictor weights are in default-step units: rescale to these steps
        for c in (model.intra, model.delta):
            self._scales.append(np.maximum(np.asarray(c.scale) / steps, MIN_SCALE_STEPS).astype(np.float64))
            w = np.zeros((self.n, self.n), np.int64)
            if c.predict:
                m = min(self.n, MAX_PREDICTED)
                rows, cols = np.tril_indices(m, -1)
                w[rows, cols] = c.predict
                w = np.rint(w * rel[None, :] / rel[:, None]).astype(np.int64)  # identity for scaled()
            self._weights.append(w)
        self._families = [np.asarray(c.family) for c in (model.intra, model.delta)]
        # Plain Python numbers for the per-value loop (numpy scalar calls dominate otherwise).
        self._rows = [
            [[int(v) for v in w[i, :i]] if w[i, :i].any() else [] for i in range(self.n)] for w in self._weights
        ]
        self._scale_lists = [[float(v) for v in s] for s in self._scales]
        self._family_lists = [[int(v) for v in f] for f in self._families]
        # Where every value is known (encoding, and checking a trimmed message), the means are too:
        # the values go to the coder one call per run of the same family, in the same order.
        self._runs = [_family_runs(f) for f in self._family_lists]

    def _decode_frame(self, dec: object, ctx: int, prev: np.ndarray | None) -> np.ndarray:
        """Decode a frame from dec (a RangeDecoder), value by value: each value's mean depends on the
        ones decoded before it (where they are known, _means predicts the same all at once)."""
        w, scales, fam = self._rows[ctx], self._scale_lists[ctx], self._family_lists[ctx]
        out = [0] * self.n
        base = [0] * self.n if prev is None else [int(v) for v in prev]
        resid = [0] * self.n
        for i in range(self.n):
            row = w[i]
            mean_q = sum(row[j] * resid[j] for j in range(i)) if row else 0  # exact integers
            # float always: a clipped mean would be an int, which constriction refuses
            mean = float(min(max(base[i] + mean_q / (1 << PREDICT_BITS), -INT8_MAX), INT8_MAX))
            model = _MODELS[fam[i]]
            out[i] = int(dec.decode(model, np.array([mean]), np.array([scales[i]]))[0])  # type: ignore[attr-defined]
            resid[i] = out[i] - base[i]
        return np.array(out, np.int64)

    def _means(self, ctx: int, x: np.ndarray, prev: np.ndarray | None) -> np.ndarray:
        """(n,) float64 mean of every value of a known frame x, exactly as _decode_frame predicts them
        one by one (integer products, one division by a power of two, the same clipping)."""
        base = np.zeros(self.n, np.int64) if prev is None else prev
        mean_q = self._weights[ctx] @ (x - base)  # strictly lower-triangular: value i sees j < i only
        return np.clip(base + mean_q / (1 << PREDICT_BITS), -INT8_MAX, INT8_MAX)

    def _encode_known(self, enc: object, ctx: int, x: np.ndarray, means: np.ndarray) -> None:
        scales = self._scales[ctx]
        for lo, hi, family in self._runs[ctx]:
            enc.encode(x[lo:hi].astype(np.int32), _MODELS[family], means[lo:hi], scales[lo:hi])  # type: ignore[attr-defined]

    def _decodes_known(self, dec: object, ctx: int, x: np.ndarray, means: np.ndarray) -> bool:
        """Whether dec (a RangeDecoder) yields the known frame x. Decoding a run with the means of x
        is exact: up to the first wrong value they are the means a real decode would use, and from
        there on the answer is no either way."""
        scales = self._scales[ctx]
        for lo, hi, family in self._runs[ctx]:
            got = dec.decode(_MODELS[family], means[lo:hi], scales[lo:hi])  # type: ignore[attr-defined]
            if not np.array_equal(got, x[lo:hi]):
                return False
        return True

    def encode(self, frames: list[np.ndarray], times_ms: list[int]) -> bytes:
        """Values (int, pose first) of 1..MAX_BATCH consecutive frames -> bytes (shortest that decode)."""
        if not 1 <= len(frames) <= MAX_BATCH or len(times_ms) != len(frames):
            raise ValueError(f"a message carries 1..{MAX_BATCH} frames")
        want = [np.asarray(x, np.int64) for x in frames]
        for x in want:
            if x.shape != (self.n,) or np.any(np.abs(x) > INT8_MAX):
                raise ValueError(f"need {self.n} values within +-{INT8_MAX}")
        devs = [
            int(np.clip(b - a - round(self.period_ms), -MAX_TIME_DEV_MS, MAX_TIME_DEV_MS))
            for a, b in itertools.pairwise(times_ms)
        ]
        enc = constriction.stream.queue.RangeEncoder()
        enc.encode(np.array([len(frames) - 1], np.int32), _COUNT)
        for dev in devs:
            enc.encode(np.array([dev], np.int32), _TIME, np.array([0.0]), np.array([TIME_SCALE_MS]))
        # the first frame against the keyframe only (intra), each later one against the one before
        means = [self._means(_ctx(k), x, want[k - 1] if k else None) for k, x in enumerate(want)]
        for k, (x, m) in enumerate(zip(want, means, strict=True)):
            self._encode_known(enc, _ctx(k), x, m)
        full = enc.get_compressed().astype(">u4").tobytes()
        best = full
        # The coder flushes whole 32-bit words; the decoder pads with zeros, so a shorter prefix
        # (or the prefix rounded up by one) often decodes the same: keep the shortest that does.
        for length in range(len(full) - 1, -1, -1):
            ok = None
            for cand in (full[:length], _increment(full[:length])):
                if cand is not None and self._decodes_to(cand, want, means, devs):
                    ok = cand
                    break
            if ok is None:
                break
            best = ok
        return best

    def _decodes_to(self, data: bytes, want: list[np.ndarray], means: list[np.ndarray], devs: list[int]) -> bool:
        try:
            dec = constriction.stream.queue.RangeDecoder(_words(data))
            if int(dec.decode(_COUNT, 1)[0]) != len(want) - 1:
                return False
            for dev in devs:
                if int(dec.decode(_TIME, np.array([0.0]), np.array([TIME_SCALE_MS]))[0]) != dev:
                    return False
            return all(
                self._decodes_known(dec, _ctx(k), x, m) for k, (x, m) in enumerate(zip(want, means, strict=True))
            )
        except Exception:  # constriction asserts on data that no model could produce: not a decode
            return False

    def decode(self, data: bytes) -> tuple[list[np.ndarray], list[int]]:
        """bytes -> (frames' int values, each frame's capture offset in ms from the first)."""
        try:
            dec = constriction.stream.queue.RangeDecoder(_words(data))
            count = int(dec.decode(_COUNT, 1)[0]) + 1
            offsets = [0]
            for _ in range(count - 1):
                dev = int(dec.decode(_TIME, np.array([0.0]), np.array([TIME_SCALE_MS]))[0])
                offsets.append(offsets[-1] + round(self.period_ms) + dev)
            frames: list[np.ndarray] = []
            for k in range(count):
                frames.append(self._decode_frame(dec, _ctx(k), frames[-1] if frames else None))
        except EntropyError:
            raise
        except Exception as exc:  # constriction asserts on data that no model could produce
            raise EntropyError(f"malformed params: entropy-coded values ({type(exc).__name__})") from None
        return frames, offsets


def _ctx(k: int) -> int:
    """Context of a message's k-th frame: 0 (intra) for the first, 1 (delta) for the others."""
    return 0 if k == 0 else 1


def _words(data: bytes) -> np.ndarray:
    """A message's bytes as the coder's 32-bit words, padded with zeros (and two spare words)."""
    return np.frombuffer(data + b"\0" * (-len(data) % 4 + 8), ">u4").astype(np.uint32)


def _family_runs(families: list[int]) -> list[tuple[int, int, int]]:
    """[(start, end, family)] of the consecutive values that share a family."""
    runs: list[tuple[int, int, int]] = []
    for i, f in enumerate(families):
        if runs and runs[-1][2] == f:
            runs[-1] = (runs[-1][0], i + 1, f)
        else:
            runs.append((i, i + 1, f))
    return runs


def _increment(prefix: bytes) -> bytes | None:
    if not prefix:
        return None
    v = int.from_bytes(prefix, "big") + 1
    return None if v >= 1 << (8 * len(prefix)) else v.to_bytes(len(prefix), "big")


# -- fitting ---------------------------------------------------------------------------------------
def _nll_bits(r: np.ndarray, family: int, scale: float) -> float:
    """Mean bits of integer residuals (in steps) under the quantized distribution (no clipping)."""
    from scipy import stats

    dist = {GAUSSIAN: stats.norm, LAPLACE: stats.laplace, CAUCHY: stats.cauchy}[family](0, scale)
    p = dist.cdf(r + 0.5) - dist.cdf(r - 0.5)
    return float(-np.log2(np.maximum(p, 1e-12)).mean())


def _fit_context(x: np.ndarray, base: np.ndarray, steps: np.ndarray, ridge: float = 1.0) -> Context:
    """x: (N, n) int symbols at the default steps; base: what they are coded against (0 or previous)."""
    n = x.shape[1]
    d = (x - base).astype(np.float64)
    w = np.zeros((n, n))
    m = min(n, MAX_PREDICTED)
    for i in range(1, m):
        a = d[:, :i]
        w[i, :i] = np.linalg.solve(a.T @ a + ridge * np.eye(i), a.T @ d[:, i])
    wq = np.clip(
        np.rint(w * (1 << PREDICT_BITS)), -MAX_PREDICT * (1 << PREDICT_BITS), MAX_PREDICT * (1 << PREDICT_BITS)
    )
    resid = d - (d @ np.tril(wq, -1).T) / (1 << PREDICT_BITS)  # what the coder's integer predictor leaves
    families, scales = [], []
    for i in range(n):
        r = resid[:, i]
        best = None
        for fam in FAMILIES:
            if fam == GAUSSIAN:
                cand = [r.std()]
            elif fam == LAPLACE:
                cand = [np.abs(r).mean()]
            else:
                cand = [np.median(np.abs(r))]
            for s0 in cand:
                for f in (0.6, 0.8, 1.0, 1.25, 1.6):
                    s = max(float(s0) * f, MIN_SCALE_STEPS)
                    bits = _nll_bits(r, fam, s)
                    if best is None or bits < best[0]:
                        best = (bits, fam, s)
        assert best is not None
        families.append(best[1])
        scales.append(best[2] * steps[i])
    rows, cols = np.tril_indices(m, -1)
    return Context(tuple(families), _f16(np.array(scales)), tuple(int(v) for v in wq[rows, cols]))


def fit(seqs: list[np.ndarray], n_expr: int, profile: str, basis: str, provenance: dict) -> Model:
    """Fit both contexts on unquantized vectors (one array per run of frames of one keyframe)."""
    steps = QuantSpec().steps(n_expr)
    q = [np.clip(np.rint(s / steps), -INT8_MAX, INT8_MAX).astype(np.int64) for s in seqs]
    x = np.concatenate(q)
    intra = _fit_context(x, np.zeros_like(x), steps)
    cur = np.concatenate([s[1:] for s in q if len(s) > 1])
    prev = np.concatenate([s[:-1] for s in q if len(s) > 1])
    delta = _fit_context(cur, prev, steps)
    return Model(n_expr, intra, delta, name=f"{profile}/{basis}", provenance=provenance)


def estimate_bits(model: Model, seqs: list[np.ndarray], quant: QuantSpec, batches: tuple[int, ...] = (1, 2)) -> dict:
    """Measured mean bits per frame of the coded values (real coder, every message byte-trimmed)."""
    steps = quant.steps(model.n_expr)
    coder = Coder(model, quant, 25.0)
    out = {}
    for k in batches:
        total, frames = 0, 0
        for s in seqs:
            q = np.clip(np.rint(s / steps), -INT8_MAX, INT8_MAX).astype(np.int64)
            for i in range(0, len(q), k):
                chunk = list(q[i : i + k])
                total += 8 * len(coder.encode(chunk, [40 * j for j in range(len(chunk))]))
                frames += len(chunk)
        out[f"k={k}"] = total / max(frames, 1)
    return out
