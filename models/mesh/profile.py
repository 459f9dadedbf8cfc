"""Entry points of the `mesh` profile for the codec's registry (codec.profiles)."""

from __future__ import annotations

from pathlib import Path

from models.mesh import expression
from models.mesh.estimator import MeshEstimator
from models.mesh.renderer import MeshRenderer
from models.mesh.renderer import preload as preload
from models.types import QuantSpec


def make_estimator(size: int, weights: Path | None, quant: QuantSpec) -> MeshEstimator:
    """The mesh estimator has no weights; its values are checked against `quant` by the encoder."""
    return MeshEstimator(size)


def make_renderer(size: int, weights: Path | None) -> MeshRenderer:
    return MeshRenderer(size)


def model_id(weights: Path | None) -> str:
    """Model-free: nothing for the receiver to match."""
    return ""


def basis_id() -> str:
    """The expression basis the estimator fits (keys the fitted entropy model)."""
    return expression.BASIS_ID
