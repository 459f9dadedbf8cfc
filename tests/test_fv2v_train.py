"""fv2v training end to end on real clips: prepare -> train steps lower the loss -> CLI train + resume."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from models.fv2v import cli
from models.fv2v.config import get_config
from models.fv2v.dataset import PairDataset, prepare
from models.fv2v.model import select_runtime
from models.fv2v.trainer import CHECKPOINT, MODEL, SAMPLES, Fv2vTrainer
from models.fv2v.weights import load, read_card

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]  # real clips + training: ~30-60 s

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CLIPS = ["raw/DPE/s.mp4", "raw/CVPR2022-DaGAN/driving.mp4"]  # 256x256 face crops already
SIZE = 64
FRAMES = 24  # per clip: enough pairs, little MediaPipe time
STEPS = 40
EVAL_PAIRS = 8


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    videos = [DATA / c for c in CLIPS]
    missing = [str(v) for v in videos if not v.is_file()]
    if missing:
        pytest.skip(f"real clips not found (needs ../shared/data): {', '.join(missing)}")
    out = tmp_path_factory.mktemp("fv2v_data")
    prepare(videos, out, SIZE, max_frames=FRAMES)
    return out


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="fvcall")
    cli.add_commands(parser.add_subparsers(required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def test_prepared_dataset(dataset_dir: Path) -> None:
    index = json.loads((dataset_dir / "index.json").read_text())
    assert index["size"] == SIZE and len(index["clips"]) == 2
    for clip in index["clips"]:
        frames = np.load(dataset_dir / f"{clip['name']}.frames.npy")
        pose = np.load(dataset_dir / f"{clip['name']}.pose.npy")
        assert frames.shape == (FRAMES, SIZE, SIZE, 3) and frames.dtype == np.uint8
        assert pose.shape == (FRAMES, 3)
        assert np.isfinite(pose).all(1).mean() > 0.9  # frontal talking heads: MediaPipe finds them
        assert np.nanmax(np.abs(pose)) < 60.0
    item = PairDataset(dataset_dir, size=SIZE)[3]
    assert item["source"].shape == (3, SIZE, SIZE) and item["pose_driving"].shape == (3,)
    assert not torch.equal(item["source"], item["driving"])


def test_training_lowers_loss(dataset_dir: Path) -> None:
    torch.manual_seed(0)
    cfg = get_config("tiny")
    data = PairDataset(dataset_dir, size=SIZE, flip=False)
    fixed = default_collate([data[i * len(data) // EVAL_PAIRS] for i in range(EVAL_PAIRS)])
    trainer = Fv2vTrainer(cfg, select_runtime("cpu", "fp32"))
    before = trainer.evaluate(fixed)
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.train.batch, shuffle=True, drop_last=True)
    history = []
    while trainer.step < STEPS:
        for batch in loader:
            history.append(trainer.train_step(batch)[0])
            if trainer.step >= STEPS:
                break
    after = trainer.evaluate(fixed)
    assert after < 0.8 * before, (before, after)
    first = np.mean([h["l1"] + h["ssim"] for h in history[:5]])
    last = np.mean([h["l1"] + h["ssim"] for h in history[-5:]])
    assert last < first, (first, last)
    assert all(np.isfinite(h["total"]) for h in history)


def test_cli_train_and_resume(dataset_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert _cli("train", "--data", str(dataset_dir), "--config", "tiny", "--out", str(run), "--steps", "2") == 0
    assert (run / CHECKPOINT).is_file() and (run / MODEL).is_file()
    assert list((run / SAMPLES).glob("*.png"))
    assert read_card(run / MODEL)["steps"] == 2
    # a second run into the same folder must ask for --resume
    assert _cli("train", "--data", str(dataset_dir), "--config", "tiny", "--out", str(run), "--steps", "3") == 1
    assert "--resume" in capsys.readouterr().err
    assert (
        _cli(
            "train",
            "--data",
            str(dataset_dir),
            "--config",
            "tiny",
            "--out",
            str(run),
            "--steps",
            "3",
            "--resume",
        )
        == 0
    )
    card = read_card(run / CHECKPOINT)
    assert card["steps"] == 3 and card["training_data"] and "train_total" in card["metrics"]
    assert len((run / "log.jsonl").read_text().splitlines()) == 3
    load(run / MODEL)  # the inference weights load by their card's config name
    capsys.readouterr()


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli("prepare", str(tmp_path / "none.mp4"), "--out", str(tmp_path / "d")) == 1
    err = capsys.readouterr().err
    assert err.startswith("fvcall prepare: error: no such video") and err.count("\n") == 1
    assert _cli("train", "--data", str(tmp_path / "nodata"), "--config", "tiny", "--out", str(tmp_path / "r")) == 1
    err = capsys.readouterr().err
    assert err.startswith("fvcall train: error: ") and "prepare" in err and err.count("\n") == 1
    assert _cli("train", "--data", str(tmp_path), "--config", "huge", "--out", str(tmp_path / "r")) == 1
    assert "unknown fv2v config 'huge'" in capsys.readouterr().err
