"""Entropy coding of the parameter stream: round trips on real sequences, golden bytes, models as data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import read_frames

from codec import entropy, profiles, wire
from codec.encoder import FaceEncoder
from codec.params import INT8_MAX, QuantSpec
from models.mesh import expression

GOLDEN = Path(__file__).parent / "golden"
N_EXPR = 11
# Two frames of a v2 PARAMS message, coded with the generic model (fixed in code, not refitted).
GOLDEN_FRAMES = (
    np.array([3, -2, 1, 5, -1, 2, 0, 1, -1, 0, 0, 2, 1, 0, 0, 1, -1]),
    np.array([4, -2, 1, 6, -1, 2, 0, 1, -1, 0, 0, 3, 1, 0, 0, 1, -1]),
)
BASIS = profiles.get("mesh").basis_id()
MESH_N_EXPR = expression.get().n_expr  # size of the shipped model (the default expression model)


def _coder(model: entropy.Model | None = None, quant: QuantSpec | None = None) -> entropy.Coder:
    return entropy.Coder(model or entropy.generic(N_EXPR), quant or QuantSpec(), 25.0)


@pytest.fixture(scope="module")
def real_values() -> list[np.ndarray]:
    """Unquantized parameters of 80 frames of a real clip, through the real sender's estimator."""
    frames = read_frames("DPE/s.mp4", 80)
    enc = FaceEncoder()
    out = []
    for i, f in enumerate(frames):
        enc.encode(f, i * 40)
        if enc.kf_id >= 0 and enc.last_crop is not None:
            p = enc.estimator.estimate(enc.last_crop)
            if p is not None:
                out.append(p.vector())
    enc.close()
    assert len(out) > 60
    return out


def test_golden_model_bytes() -> None:
    assert entropy.generic(N_EXPR).to_bytes() == (GOLDEN / "entropy_model_generic_11.bin").read_bytes()


@pytest.mark.parametrize("batch", [1, 2, 4])
def test_round_trip_real_sequences(real_values: list[np.ndarray], batch: int) -> None:
    model = entropy.load("mesh", MESH_N_EXPR, BASIS)
    for quant in (QuantSpec(), QuantSpec().scaled(4.0), QuantSpec().scaled(0.5)):
        coder = _coder(model, quant)
        steps = quant.steps(MESH_N_EXPR)
        q = [np.clip(np.rint(v / steps), -INT8_MAX, INT8_MAX).astype(np.int64) for v in real_values]
        for i in range(0, len(q) - batch + 1, batch):
            chunk = q[i : i + batch]
            data = coder.encode(chunk, [40 * j for j in range(batch)])
            frames, offsets = coder.decode(data)
            assert offsets == [40 * j for j in range(batch)]
            assert all(np.array_equal(a, b) for a, b in zip(frames, chunk, strict=True))


def test_round_trip_jittered_times_and_extreme_values() -> None:
    """Trimming a message to its shortest decodable prefix must keep every value and every frame
    time, also where the last coded symbols are improbable (the tail is what trimming cuts)."""
    model = entropy.load("mesh", MESH_N_EXPR, BASIS)
    coder = _coder(model)
    rng = np.random.default_rng(11)
    for _ in range(300):
        batch = int(rng.integers(1, entropy.MAX_BATCH + 1))
        spread = int(rng.choice([1, 3, 40, INT8_MAX]))
        frames = [rng.integers(-spread, spread + 1, model.n) for _ in range(batch)]
        gaps = rng.choice([40, 41, 38, 0, 40 + entropy.MAX_TIME_DEV_MS], batch - 1)
        times = [0, *np.cumsum(gaps).tolist()]
        got, offsets = coder.decode(coder.encode(frames, times))
        assert offsets == times
        assert all(np.array_equal(a, b) for a, b in zip(got, frames, strict=True))


def test_fitted_model_beats_v1_and_quant_knob_trades_rate(real_values: list[np.ndarray]) -> None:
    model = entropy.load("mesh", MESH_N_EXPR, BASIS)
    assert model.name != "generic", "the shipped model for the mesh profile is missing"
    seqs = [np.array(real_values)]
    bits = {s: entropy.estimate_bits(model, seqs, QuantSpec().scaled(s))["k=1"] for s in (1.0, 2.0, 4.0)}
    assert bits[1.0] < 17 * 8 * 0.75  # well under the int8 packing of v1
    assert bits[1.0] > bits[2.0] > bits[4.0]


def test_missing_model_falls_back_to_generic(tmp_path: Path) -> None:
    model = entropy.load("mesh", 23, "learned-xyz", tmp_path)
    assert model.name == "generic" and model.n_expr == 23
    coder = _coder(model)
    x = [np.arange(29) % 7 - 3]
    assert np.array_equal(coder.decode(coder.encode(x, [0]))[0][0], x[0])


def test_shipped_models_have_provenance() -> None:
    files = sorted(entropy.MODEL_DIR.glob("*.json"))
    assert files
    for f in files:
        doc = json.loads(f.read_text())
        prov = doc["provenance"]
        assert prov["clips"] and prov["held_out_clips"] and prov["frames"] > 1000
        assert not set(prov["clips"]) & set(prov["held_out_clips"])
        m = entropy.load(doc["profile"], doc["n_expr"], doc["basis"])
        assert m.model_id() == doc["model_id"]


def test_model_travels_in_the_header() -> None:
    model = entropy.load("mesh", N_EXPR, BASIS)
    again = entropy.Model.from_bytes(model.to_bytes(), N_EXPR)
    assert again.model_id() == model.model_id()
    a, b = _coder(model), _coder(again)
    x = [GOLDEN_FRAMES[0], GOLDEN_FRAMES[1]]
    assert a.encode(x, [0, 40]) == b.encode(x, [0, 40])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "malformed header: entropy model does not match the expression size"),
        (bytes([1, 11]), "malformed header: entropy model truncated"),
        (entropy.generic(N_EXPR).to_bytes() + b"x", "malformed header: entropy model has trailing bytes"),
    ],
)
def test_bad_model_bytes(data: bytes, message: str) -> None:
    with pytest.raises(entropy.EntropyError) as err:
        entropy.Model.from_bytes(data, N_EXPR)
    assert str(err.value) == message


def test_random_bodies_never_crash() -> None:
    coder = _coder()
    rng = np.random.default_rng(5)
    for _ in range(3000):
        data = bytes([0x40]) + bytes(rng.integers(0, 256, int(rng.integers(1, 40)), dtype=np.uint8))
        try:
            msg = wire.decode(data, coder)
        except wire.WireError:
            continue
        assert isinstance(msg, wire.Params)
        assert 1 <= len(msg.frames) <= entropy.MAX_BATCH
        assert all(f.shape == (17,) and np.all(np.abs(f) <= INT8_MAX) for f in msg.frames)
