"""Profiles: which estimator and renderer a session uses. Imported lazily: a receiver
without MediaPipe can still render `mesh`, and torch networks load only for `fv2v`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codec.api import Estimator, Renderer

PROFILES = ("mesh", "fv2v")
DEFAULT_PROFILE = "mesh"


class ProfileError(RuntimeError):
    """A profile that cannot run here (unknown, or its weights are missing)."""


def _check(name: str) -> None:
    if name not in PROFILES:
        raise ProfileError(f"unknown profile {name!r} (known: {', '.join(PROFILES)})")


def make_estimator(name: str, size: int, weights: Path | None = None) -> Estimator:
    _check(name)
    if name == "mesh":
        from models.mesh.estimator import MeshEstimator

        return MeshEstimator(size)
    return _fv2v_checked(_fv2v().Fv2vEstimator(weights), size)


def make_renderer(name: str, size: int, weights: Path | None = None, model: str = "") -> Renderer:
    """The receiver's renderer; `model` is what the caller's header says it runs ('' = no check)."""
    _check(name)
    if model:
        have = model_id(name, weights) if weights is not None or name == "mesh" else "no weights"
        if have != model:
            raise ProfileError(
                f"the caller uses {name} model {model}, this receiver has {have or 'none'}: "
                "pass --weights with the caller's weights"
            )
    if name == "mesh":
        from models.mesh.renderer import MeshRenderer

        return MeshRenderer(size)
    return _fv2v_checked(_fv2v().Fv2vRenderer(weights), size)


def preload(name: str) -> None:
    """Load what the receiver of this profile needs before a call arrives (slow imports)."""
    _check(name)
    if name == "mesh":
        from models.mesh.renderer import preload as mesh_preload

        mesh_preload()


def model_id(name: str, weights: Path | None = None) -> str:
    """What the session header says about the weights ('' for model-free profiles)."""
    _check(name)
    return "" if name == "mesh" else _fv2v().model_id(weights)


def _fv2v_checked(part: Any, size: int) -> Any:
    """The weights fix the resolution: refuse a session whose size they were not trained for."""
    trained = part.model.cfg.image_size
    if trained != size:
        raise ProfileError(f"fv2v weights are for {trained}x{trained}, the call is {size}x{size}: use --size {trained}")
    return part


def _fv2v():
    try:
        from models.fv2v import profile
    except ImportError as exc:
        raise ProfileError(f"profile 'fv2v' is not available in this build: {exc}") from None
    return profile
