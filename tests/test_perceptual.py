"""benchmarks/harness/perceptual.py: LPIPS / DISTS code path with random weights in torchvision's layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.harness import perceptual as pm

SIDE = 64  # enough for VGG16's four poolings


def _write_random(directory: Path, dists_head: bool = True) -> None:
    """Random weights under the real file names and key names (torchvision keeps a classifier too)."""
    torch.manual_seed(0)
    alex = {f"features.{k}": v for k, v in pm.alexnet_features().state_dict().items()}
    alex["classifier.1.weight"] = torch.zeros(4, 4)  # extra keys are ignored, as in torchvision's file
    torch.save(alex, directory / "alexnet-owt-7be5be79.pth")
    torch.save({f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(pm.ALEX_CHANNELS)},
               directory / "alex.pth")  # fmt: skip
    vgg = {f"features.{k}": v for k, v in pm.vgg16_features().state_dict().items()}
    from safetensors.torch import save_file

    save_file(vgg, str(directory / "vgg16-397923af.safetensors"))
    if dists_head:
        n = sum(pm.DISTS_CHANNELS)
        torch.save({"alpha": torch.rand(1, n, 1, 1), "beta": torch.rand(1, n, 1, 1)}, directory / "weights.pt")


def _images(n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    a = (rng.random((n, SIDE, SIDE, 3)) * 255).astype(np.uint8)
    b = np.clip(a.astype(np.int16) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    return a, b


def test_identical_images_score_zero_and_different_ones_more(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    _write_random(tmp_path)
    p = pm.Perceptual.from_dir(tmp_path)
    assert set(p.nets) == {"lpips", "dists"} and not p.skipped
    a, b = _images()
    same = p.score(a, a)
    diff = p.score(a, b)
    for m in pm.METRICS:
        assert len(same[m]) == len(a)
        assert max(abs(v) for v in same[m]) < 1e-5, m
        assert min(diff[m]) > 1e-4, m


def test_one_metric_runs_when_the_other_is_missing(tmp_path: Path) -> None:
    _write_random(tmp_path, dists_head=False)
    p = pm.Perceptual.from_dir(tmp_path)
    assert set(p.nets) == {"lpips"} and "weights.pt (" in p.skipped["dists"]


def test_missing_and_mismatched_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(pm.PerceptualWeightsError, match="no such folder"):
        pm.Perceptual.from_dir(tmp_path / "nope")
    with pytest.raises(pm.PerceptualWeightsError, match="neither LPIPS nor DISTS") as e:
        pm.Perceptual.from_dir(tmp_path)
    assert "\n" not in str(e.value) and "alexnet-owt-7be5be79.pth" in str(e.value)
    _write_random(tmp_path)
    torch.save({"lin0.model.1.weight": torch.rand(1, 64, 1, 1)}, tmp_path / "alex.pth")
    with pytest.raises(pm.PerceptualWeightsError, match=r"alex\.pth: missing keys lin1"):
        pm.Perceptual.from_dir(tmp_path)
    _write_random(tmp_path)
    bad = {f"features.{k}": v for k, v in pm.alexnet_features().state_dict().items()}
    bad["features.0.weight"] = torch.zeros(64, 3, 7, 7)
    torch.save(bad, tmp_path / "alexnet-owt-7be5be79.pth")
    with pytest.raises(pm.PerceptualWeightsError, match=r"features\.0\.weight has shape \(64, 3, 7, 7\)"):
        pm.Perceptual.from_dir(tmp_path)
    (tmp_path / "alexnet-owt-7be5be79.pth").write_bytes(b"not a torch file")
    with pytest.raises(pm.PerceptualWeightsError, match="cannot be read as weights"):
        pm.Perceptual.from_dir(tmp_path)
