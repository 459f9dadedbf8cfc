"""Entry points of the `mesh` profile for the codec's registry (codec.profiles)."""

from __future__ import annotations

from pathlib import Path

from models.mesh import expression
from models.mesh.estimator import MeshEstimator
from models.mesh.renderer import MeshRenderer
from models.mesh.renderer import preload as preload
from models.types import ProfileError, QuantSpec


def make_estimator(size: int, weights: Path | None, quant: QuantSpec) -> MeshEstimator:
    """The mesh estimator has no weights; its values are checked against `quant` by the encoder."""
    return MeshEstimator(size)


def make_renderer(size: int, weights: Path | None) -> MeshRenderer:
    return MeshRenderer(size)


def make_renderer_for(size: int, model: str) -> MeshRenderer:
    """The renderer of the expression model a caller's header names ('' = this build's default)."""
    found = expression.by_id(model)
    if found is None:
        known = ", ".join(make().model_id for make in expression.MODELS.values())
        raise ProfileError(f"the caller uses mesh expression model {model}, this receiver has {known}: update fvcall")
    return MeshRenderer(size, model=found)


def model_id(weights: Path | None) -> str:
    """The expression model: both ends must hold the same basis."""
    return expression.get().model_id


def basis_id(model: str = "") -> str:
    """The expression basis of a session whose header names `model` ('' = the default): keys the
    fitted statistics of its coefficients (codec/entropy_models)."""
    return model or expression.get().model_id
