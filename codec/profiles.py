"""The profile registry: which estimator and renderer a session uses, one entry per profile.

A profile is a folder under models/ with a module that defines the entry points an entry names;
the module is imported on first use, so torch networks load only for `fv2v` and MediaPipe only
where a mesh estimator or renderer is built. A new profile is one entry here and one folder.

This module is also the one place where code above the codec (peer/, the `fvcall` command)
reaches model-side things that are not a profile part: the embedded sample clip, the training
commands, and the silencer for native libraries' start-up noise. Everything else goes through
codec.api's Encoder/Decoder.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from codec.api import Estimator, Renderer
from models.native import quiet_native_stderr
from models.types import ProfileError, QuantSpec

__all__ = [
    "DEFAULT_PROFILE",
    "PROFILES",
    "Profile",
    "ProfileError",
    "add_training_commands",
    "get",
    "make_renderer",
    "quiet_native_stderr",
    "sample_frames",
]


@dataclass(frozen=True)
class Profile:
    """One registry entry: where a profile's parts live. Each attribute names a callable of `module`."""

    name: str
    """Name in the session header and on the command line."""
    module: str
    """Module defining the entry points below, imported on first use."""
    estimator_fn: str
    """(size, weights, quant) -> Estimator."""
    renderer_fn: str
    """(size, weights) -> Renderer."""
    model_id_fn: str
    """(weights) -> the header's model id ('' for model-free profiles)."""
    preload_fn: str
    """() -> None: loads what a receiver needs before a call arrives (slow imports)."""
    basis_id_fn: str = "basis_id"
    """(header model id) -> id of the expression parameterisation (which fitted entropy model applies,
    codec.entropy)."""
    needs_weights: bool = False
    """True: both ends must run the same weights (the header's model id is checked)."""
    closed_loop: bool = False
    """True: the renderer is cheap enough for the sender to run it and measure what the receiver
    shows (codec.refresh), which then drives keyframe refreshes."""
    references: bool = False
    """True: the renderer is a models.types.ReferenceRenderer and the estimator a ReferenceEstimator,
    so the sender may draw regions from reference pictures (codec.bank)."""
    renderer_for_fn: str = ""
    """(size, model id) -> Renderer of the model the caller's header names, or ProfileError where this
    build lacks it; '' where the profile has one model per weights file."""

    def _load(self, attr: str) -> Any:
        try:
            mod: ModuleType = importlib.import_module(self.module)
        except ImportError as exc:
            raise ProfileError(f"profile {self.name!r} is not available in this build: {exc}") from None
        return getattr(mod, attr)

    def estimator(self, size: int, weights: Path | None = None, quant: QuantSpec | None = None) -> Estimator:
        """The sender's estimator; values are limited to what `quant` can carry."""
        return self._load(self.estimator_fn)(size, weights, quant or QuantSpec())

    def renderer(self, size: int, weights: Path | None = None) -> Renderer:
        return self._load(self.renderer_fn)(size, weights)

    def renderer_for(self, size: int, model: str) -> Renderer:
        return self._load(self.renderer_for_fn)(size, model)

    def model_id(self, weights: Path | None = None) -> str:
        return self._load(self.model_id_fn)(weights)

    def preload(self) -> None:
        self._load(self.preload_fn)()

    def basis_id(self, model: str = "") -> str:
        """The basis of the session whose header names `model` ('' = this build's default)."""
        return self._load(self.basis_id_fn)(model)


_REGISTRY = {
    p.name: p
    for p in (
        Profile(
            "mesh",
            "models.mesh.profile",
            "make_estimator",
            "make_renderer",
            "model_id",
            "preload",
            closed_loop=True,
            references=True,
            renderer_for_fn="make_renderer_for",
        ),
        Profile(
            "fv2v", "models.fv2v.profile", "make_estimator", "make_renderer", "model_id", "preload", needs_weights=True
        ),
    )
}
PROFILES = tuple(_REGISTRY)
DEFAULT_PROFILE = "mesh"


def get(name: str) -> Profile:
    """The registry entry; ProfileError for an unknown name."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ProfileError(f"unknown profile {name!r} (known: {', '.join(PROFILES)})") from None


def make_renderer(name: str, size: int, weights: Path | None = None, model: str = "") -> Renderer:
    """The receiver's renderer; `model` is what the caller's header says it runs ('' = no check)."""
    profile = get(name)
    if profile.renderer_for_fn:
        return profile.renderer_for(size, model)  # the profile picks the caller's model, or refuses it
    if model:
        have = profile.model_id(weights) if weights is not None or not profile.needs_weights else "no weights"
        if have != model:
            raise ProfileError(
                f"the caller uses {name} model {model}, this receiver has {have or 'none'}: "
                "pass --weights with the caller's weights"
            )
    return profile.renderer(size, weights)


def sample_frames(seconds: float) -> tuple[Iterator[np.ndarray], float]:
    """The embedded sample clip (a synthetic talking head) and its frame rate."""
    from models import sample  # renders with the mesh profile: loaded only when asked for

    return sample.frames(seconds), sample.SAMPLE_FPS


def add_training_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the neural profile's `prepare` and `train` subcommands, where this build has it."""
    try:
        from models.fv2v import cli as fv2v_cli
    except ImportError:
        return  # a build without the neural profile
    fv2v_cli.add_commands(subparsers)
