"""fv2v checkpoints: safetensors round trip, refused configs, missing and altered files, the profile."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from codec import profiles
from codec.params import INT8_MAX, FrameParams, QuantSpec, dequantize, in_range, quantize
from models.fv2v import weights as W
from models.fv2v.config import get_config
from models.fv2v.model import Fv2vModel, select_runtime
from models.fv2v.profile import Fv2vEstimator, Fv2vRenderer, MissingWeightsError, model_id

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, Fv2vModel]:
    torch.manual_seed(0)
    model = Fv2vModel(get_config("tiny")).eval().place(select_runtime("cpu", "fp32"))
    path = tmp_path / "model.safetensors"
    W.save(path, model, steps=7, training_data=["a.mp4"], metrics={"l1": 0.5})
    return path, model


def test_round_trip(saved: tuple[Path, Fv2vModel]) -> None:
    path, model = saved
    assert path.read_bytes()[8:9] == b"{"  # safetensors: u64 header length, then a JSON header
    card = json.loads(W.card_path(path).read_text())
    assert card["config_name"] == "tiny" and card["steps"] == 7 and card["training_data"] == ["a.mp4"]
    assert card["config"] == get_config("tiny").to_dict()
    assert card["sha256"] == W.sha256_file(path) and card["metrics"] == {"l1": 0.5}
    assert card["parameters"]["total"] == sum(p.numel() for p in model.parameters())
    loaded = W.load(path, runtime=select_runtime("cpu", "fp32"))
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    img = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    pose, expr = np.array([5.0, -3.0, 2.0, 0.05, -0.02, 0.0]), np.zeros((8, 3))
    np.testing.assert_array_equal(
        model.render(model.keyframe(img), pose, expr), loaded.render(loaded.keyframe(img), pose, expr)
    )
    assert model_id(path) == f"fv2v-tiny-{card['sha256'][:12]}"


def test_mismatched_config_refused(saved: tuple[Path, Fv2vModel]) -> None:
    path, _ = saved
    with pytest.raises(W.ConfigMismatchError) as err:
        W.load(path, "base")
    assert isinstance(err.value, ValueError)
    assert str(err.value) == "fv2v weights model.safetensors are for config 'tiny', not 'base'"
    changed = dataclasses.replace(get_config("tiny"), num_kp=10)
    with pytest.raises(W.ConfigMismatchError) as err:
        W.load(path, changed)
    assert str(err.value) == (
        "fv2v weights model.safetensors were made with a different 'tiny' config "
        "(num_kp: 8 in the weights, 10 in the code)"
    )
    # training-only sections may differ: a new lr does not invalidate weights
    relaxed = dataclasses.replace(get_config("tiny"), train=dataclasses.replace(get_config("tiny").train, lr=1e-3))
    W.load(path, relaxed, runtime=select_runtime("cpu", "fp32"))


def test_missing_and_altered(tmp_path: Path, saved: tuple[Path, Fv2vModel]) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(MissingWeightsError) as err:
        W.load(missing)
    assert isinstance(err.value, RuntimeError)
    assert str(err.value) == f"no fv2v weights: {missing} does not exist"
    with pytest.raises(MissingWeightsError, match=r"^no fv2v weights: "):
        Fv2vRenderer(None)
    with pytest.raises(MissingWeightsError, match=r"^no fv2v weights: "):
        Fv2vEstimator(missing)
    path, _ = saved
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(W.CorruptWeightsError, match="sha256"):
        W.load(path)
    W.card_path(path).unlink()
    with pytest.raises(MissingWeightsError, match="model card"):
        W.load(path)


def test_profile_round_trip(saved: tuple[Path, Fv2vModel]) -> None:
    path, _ = saved
    rt = select_runtime("cpu", "fp32")
    est, ren = Fv2vEstimator(path, runtime=rt), Fv2vRenderer(path, runtime=rt)
    assert est.n_expr == 3 * get_config("tiny").num_kp
    key = np.random.default_rng(2).integers(0, 256, (96, 96, 3), dtype=np.uint8)  # codec size != 64
    assert est.set_keyframe(key) == b""
    ren.set_keyframe(key, b"")
    params = est.estimate(key)
    assert params is not None and params.expression.shape == (est.n_expr,)
    spec = QuantSpec()
    assert in_range(params, spec)
    out = ren.render(dequantize(quantize(params, spec), spec))
    assert out.shape == (96, 96, 3) and out.dtype == np.uint8
    with pytest.raises(ValueError):
        ren.set_keyframe(key, b"x")


def test_estimator_clips_to_the_sessions_quantization(saved: tuple[Path, Fv2vModel]) -> None:
    """--quant-scale reaches the estimator: it clips to the steps the call uses, not the defaults."""
    path, _ = saved
    k = get_config("tiny").num_kp
    big = (torch.full((1, 3), 200.0), torch.full((1, 3), 0.9), torch.full((1, k, 3), 2.0))  # beyond int8 at q1 and q2

    def clipped(quant: QuantSpec) -> np.ndarray:
        est = profiles.get("fv2v").estimator(get_config("tiny").image_size, path, quant)
        est.model.estimate = lambda crop: big  # type: ignore[method-assign]
        params = est.estimate(np.zeros((64, 64, 3), np.uint8))
        assert params is not None
        return params.vector()

    for scale in (1.0, 2.0):
        spec = QuantSpec().scaled(scale)
        v = clipped(spec)
        assert in_range(FrameParams.from_vector(v), spec)
        np.testing.assert_allclose(v[:3], spec.angle_step * INT8_MAX)  # clipped exactly at the range
        np.testing.assert_allclose(v[6:], spec.expression_step * INT8_MAX, rtol=1e-6)
    assert clipped(QuantSpec().scaled(2.0))[0] == 2 * clipped(QuantSpec())[0]
