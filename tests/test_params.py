"""Quantization: error within half a step inside the range, clipping outside it."""

from __future__ import annotations

import numpy as np
import pytest

from codec.params import INT8_MAX, POSE_SIZE, FrameParams, QuantSpec, dequantize, in_range, quantize


def _random_params(rng: np.random.Generator, spec: QuantSpec, n_expr: int) -> FrameParams:
    steps = spec.steps(n_expr)
    return FrameParams.from_vector(rng.uniform(-1, 1, POSE_SIZE + n_expr) * steps * INT8_MAX)


@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0])
def test_error_within_half_step(scale: float) -> None:
    rng = np.random.default_rng(0)
    spec = QuantSpec().scaled(scale)
    steps = spec.steps(11)
    for _ in range(500):
        p = _random_params(rng, spec, 11)
        q = quantize(p, spec)
        assert q.dtype == np.int8 and q.shape == (POSE_SIZE + 11,)
        err = np.abs(dequantize(q, spec).vector() - p.vector())
        assert np.all(err <= steps / 2 + 1e-9)


def test_step_sizes_are_the_documented_ones() -> None:
    s = QuantSpec()
    assert s.steps(1).tolist() == [0.5, 0.5, 0.5, 1 / 512, 1 / 512, 0.004, 1 / 512]


def test_out_of_range_clips_and_is_flagged() -> None:
    spec = QuantSpec()
    p = FrameParams(yaw=80.0, tx=-0.4, expression=np.array([0.3], np.float32))
    assert not in_range(p, spec)
    back = dequantize(quantize(p, spec), spec)
    assert back.yaw == pytest.approx(63.5) and back.tx == pytest.approx(-127 / 512)
    assert back.expression[0] == pytest.approx(127 / 512)
    assert in_range(FrameParams(yaw=63.0), spec)


def test_quant_spec_list_round_trip_and_validation() -> None:
    spec = QuantSpec().scaled(2.0)
    assert QuantSpec.from_list(spec.to_list()) == spec
    for bad in ([1, 2, 3], [0, 1, 1, 1], [1, 1, 1, "x"], [1, 1, 1, 1e9]):
        with pytest.raises(ValueError, match="quantization steps must be 4 positive numbers"):
            QuantSpec.from_list(bad)
