"""fv2v checkpoints: tensors in safetensors, a JSON model card beside them. Never pickle.

    NAME.safetensors   "model.*" inference weights (+ "disc.*", "opt_g.*", "opt_d.*" in training
                       checkpoints, which resume needs and the profile ignores)
    NAME.json          model card: format, config name + full config, training data, steps, metrics,
                       parameter counts, sha256 of NAME.safetensors

The card's architecture config must equal the code's config of the same name, otherwise loading is
refused (ConfigMismatchError): weights silently loaded into a different network would render garbage.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from models.fv2v.config import Fv2vConfig, get_config
from models.fv2v.model import Fv2vModel, Runtime

FORMAT = "fvcall-fv2v/1"
MODEL_PREFIX = "model."
CARD_SUFFIX = ".json"
HASH_CHUNK = 1 << 20  # bytes read at a time when hashing
FP16_BYTES = 2


class MissingWeightsError(RuntimeError):
    """No usable fv2v weights file (none given, or not on disk)."""


class ConfigMismatchError(ValueError):
    """The checkpoint was made for a different network configuration."""


class CorruptWeightsError(ValueError):
    """The checkpoint is unreadable, altered (sha256) or lacks tensors."""


def card_path(weights: str | Path) -> Path:
    """The model card beside a weights file."""
    return Path(weights).with_suffix(CARD_SUFFIX)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """Parameters per direct child network, and the total."""
    counts = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


def save(
    path: str | Path,
    model: Fv2vModel,
    *,
    steps: int = 0,
    training_data: list[str] | None = None,
    metrics: dict[str, float] | None = None,
    extra: dict[str, torch.Tensor] | None = None,
    extra_card: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write NAME.safetensors (atomically) and its card; returns the card."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {MODEL_PREFIX + k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for k, v in (extra or {}).items():
        if k.startswith(MODEL_PREFIX):
            raise ValueError(f"extra tensor {k!r} would shadow the model's weights")
        tensors[k] = v.detach().cpu().contiguous()
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT, "config_name": model.cfg.name})
    os.replace(tmp, path)
    counts = parameter_counts(model)
    card: dict[str, Any] = {
        "format": FORMAT,
        "config_name": model.cfg.name,
        "config": model.cfg.to_dict(),
        "training_data": list(training_data or []),
        "steps": int(steps),
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
        "parameters": counts,
        "fp16_megabytes": round(counts["total"] * FP16_BYTES / 1e6, 3),
        "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sha256": sha256_file(path),
        **(extra_card or {}),
    }
    tmp_card = card_path(path).with_name(card_path(path).name + ".tmp")
    tmp_card.write_text(json.dumps(card, indent=2) + "\n")
    os.replace(tmp_card, card_path(path))
    return card


def read_card(path: str | Path | None) -> dict[str, Any]:
    """The model card of a weights file; MissingWeightsError when either file is absent."""
    if path is None:
        raise MissingWeightsError("no fv2v weights: no weights file given (train one with `fvcall train`)")
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"no fv2v weights: {path} does not exist")
    if not card_path(path).is_file():
        raise MissingWeightsError(f"no fv2v weights: model card {card_path(path)} is missing")
    try:
        card = json.loads(card_path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CorruptWeightsError(f"fv2v model card {card_path(path)} is unreadable: {e}") from e
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise CorruptWeightsError(f"fv2v model card {card_path(path)} is not in format {FORMAT}")
    return card


def check_config(card: dict[str, Any], cfg: Fv2vConfig, path: str | Path) -> None:
    """Refuse a checkpoint whose architecture is not cfg's (ConfigMismatchError, one line)."""
    name = Path(path).name
    if card.get("config_name") != cfg.name:
        raise ConfigMismatchError(f"fv2v weights {name} are for config '{card.get('config_name')}', not '{cfg.name}'")
    theirs = {k: v for k, v in card.get("config", {}).items() if k in cfg.architecture()}
    ours = cfg.architecture()
    for key, diff in _first_difference(theirs, ours):
        raise ConfigMismatchError(
            f"fv2v weights {name} were made with a different '{cfg.name}' config "
            f"({key}: {diff[0]!r} in the weights, {diff[1]!r} in the code)"
        )


def _first_difference(a: Any, b: Any, prefix: str = "") -> list[tuple[str, tuple[Any, Any]]]:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            found = _first_difference(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
            if found:
                return found
        return []
    return [] if a == b else [(prefix, (a, b))]


def load_tensors(path: str | Path, verify: bool = True) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint (after the sha256 check against its card)."""
    card = read_card(path)
    if verify and sha256_file(path) != card.get("sha256"):
        raise CorruptWeightsError(f"fv2v weights {path} do not match the sha256 in their model card")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CorruptWeightsError(f"fv2v weights {path} are unreadable: {e}") from e


def load(path: str | Path | None, config: Fv2vConfig | str | None = None, runtime: Runtime | None = None) -> Fv2vModel:
    """A placed, eval-mode model from a checkpoint. config None: the one named in the card."""
    card = read_card(path)
    assert path is not None
    if config is None:
        try:
            cfg = get_config(str(card.get("config_name")))
        except ValueError as e:
            raise ConfigMismatchError(f"fv2v weights {Path(path).name}: {e}") from e
    else:
        cfg = get_config(config) if isinstance(config, str) else config
    check_config(card, cfg, path)
    tensors = load_tensors(path)
    state = {k[len(MODEL_PREFIX) :]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
    model = Fv2vModel(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CorruptWeightsError(
            f"fv2v weights {Path(path).name} lack {len(missing)} tensors "
            f"(e.g. {missing[:1]}) and have {len(unexpected)} unknown ones"
        )
    return model.eval().place(runtime)


def model_id(path: str | Path) -> str:
    """Short id of a weights file for the session header: 'fv2v-<config>-<sha256[:12]>'."""
    card = read_card(path)
    return f"fv2v-{card.get('config_name')}-{str(card.get('sha256', ''))[:12]}"


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], list[Any]]:
    """An optimizer's state as flat tensors + its param groups (JSON-able) for the card."""
    sd = opt.state_dict()
    tensors = {
        f"{prefix}.{idx}.{name}": v
        for idx, st in sd["state"].items()
        for name, v in st.items()
        if isinstance(v, torch.Tensor)
    }
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, groups


def restore_optimizer(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], prefix: str, groups: list[dict[str, Any]]
) -> None:
    """Inverse of optimizer_tensors."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        if key.startswith(prefix + "."):
            idx, name = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(idx), {})[name] = v
    fixed = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in groups]
    opt.load_state_dict({"state": state, "param_groups": fixed})
