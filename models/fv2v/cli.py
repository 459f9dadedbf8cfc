"""`prepare` and `train` subcommands for the `fvcall` command line (wired in by peer/)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_SIZE = 256  # px, the base config's crop size


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `prepare` and `train` to an argparse subparsers object; each sets func(args) -> exit code."""
    p = subparsers.add_parser("prepare", help="crop faces and label head poses of videos for fv2v training")
    p.add_argument("videos", nargs="+", type=Path, help="video files (any format PyAV reads)")
    p.add_argument("--out", required=True, type=Path, help="dataset folder (created, or added to)")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, help="crop side in pixels (default %(default)s)")
    p.add_argument("--max-frames", type=int, default=None, help="use at most this many frames per video")
    p.set_defaults(func=run_prepare)

    t = subparsers.add_parser("train", help="train the fv2v networks on a prepared dataset")
    t.add_argument("--data", required=True, type=Path, help="dataset folder made by `prepare`")
    t.add_argument("--config", default="base", help="fv2v config name (default %(default)s)")
    t.add_argument("--out", required=True, type=Path, help="run folder: checkpoints, samples, log")
    t.add_argument("--steps", type=int, default=None, help="total steps (default: the config's)")
    t.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.safetensors")
    t.add_argument("--batch", type=int, default=None, help="pairs per step per process (default: the config's)")
    t.set_defaults(func=run_train)


def _fail(cmd: str, err: BaseException) -> int:
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    print(f"fvcall {cmd}: error: {msg}", file=sys.stderr)
    return 1


def run_prepare(args: argparse.Namespace) -> int:
    import av

    from models.fv2v.dataset import prepare
    from models.types import NoFaceError

    if args.max_frames is not None and args.max_frames < 2:
        return _fail("prepare", ValueError("--max-frames must be at least 2"))
    try:
        index = prepare(args.videos, args.out, args.size, max_frames=args.max_frames, progress=print)
    except (FileNotFoundError, NoFaceError, ValueError, OSError, av.FFmpegError) as e:
        return _fail("prepare", e)
    print(f"{args.out}: {len(index['clips'])} clips, {sum(c['frames'] for c in index['clips'])} frames")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from models.fv2v.trainer import TrainError, train
    from models.fv2v.weights import ConfigMismatchError, CorruptWeightsError, MissingWeightsError

    for name, value in (("--steps", args.steps), ("--batch", args.batch)):
        if value is not None and value < 1:
            return _fail("train", ValueError(f"{name} must be at least 1"))
    try:
        result = train(args.data, args.config, args.out, steps=args.steps, resume=args.resume, batch=args.batch)
    except (
        FileNotFoundError,
        ValueError,
        TrainError,
        MissingWeightsError,
        ConfigMismatchError,
        CorruptWeightsError,
        OSError,
    ) as e:
        return _fail("train", e)
    except KeyboardInterrupt:
        print("fvcall train: interrupted (resume with --resume from the last checkpoint)", file=sys.stderr)
        return 130
    print(f"{args.out}: {result.steps} steps; weights {result.model_path}")
    return 0
