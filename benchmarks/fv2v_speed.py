"""fv2v speed: per-module ms/frame for sender (H+Δ), receiver (M+G) and keyframe (F+L, F+L+H+Δ),
at the tiny, small and base configs, CPU fp32 / bf16 and CUDA bf16 when there is a GPU; plus parameter
counts and fp16 weight sizes per network. Random weights: speed does not depend on training.

    python benchmarks/fv2v_speed.py [--configs tiny small base] [--reps 10] [--threads N] [--cpu-bf16 auto]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from models.fv2v.config import get_config
from models.fv2v.discriminator import MultiScaleDiscriminator
from models.fv2v.model import Fv2vModel, Runtime, select_runtime
from models.fv2v.transform import rotation_matrix, transform_keypoints

FP16_BYTES = 2
MB = 1e6
PAPER_SYMBOLS = {
    "appearance": "F",
    "canonical": "L",
    "head_pose": "H",
    "expression": "Δ",
    "motion": "M",
    "generator": "G",
    "discriminator": "D",
}
SLOW_CPU_BF16 = "this CPU has no native bf16 (avx512_bf16/amx): emulated bf16 is 3-40x slower than fp32"


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def time_ms(fn: Callable[[], object], device: torch.device, warmup: int, reps: int) -> float:
    """Mean wall time of fn in ms after warm-up (synchronized on CUDA)."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / reps * 1e3


def report_sizes(name: str) -> None:
    cfg = get_config(name)
    model = Fv2vModel(cfg)
    nets = dict(model.named_children()) | {"discriminator": MultiScaleDiscriminator(cfg)}
    print(
        f"\n[{name}] {cfg.image_size}x{cfg.image_size}, K={cfg.num_kp}, volume "
        f"{cfg.appearance.feat_ch}x{cfg.appearance.depth}x{cfg.volume_side}x{cfg.volume_side}"
    )
    total = 0
    for key, net in nets.items():
        n = sum(p.numel() for p in net.parameters())
        if key != "discriminator":
            total += n
        print(f"  {PAPER_SYMBOLS[key]} {key:<14} {n:>11,d} params  {n * FP16_BYTES / MB:7.2f} MB fp16")
    print(f"  model (no D)     {total:>11,d} params  {total * FP16_BYTES / MB:7.2f} MB fp16")


def bench(name: str, runtime: Runtime, warmup: int, reps: int) -> None:
    cfg = get_config(name)
    torch.manual_seed(0)
    model = Fv2vModel(cfg).eval().place(runtime)
    dev = runtime.device
    img = model.to_input(torch.rand(1, 3, cfg.image_size, cfg.image_size))
    with torch.inference_mode(), runtime.autocast():
        cache = model.source(img)
        rot = rotation_matrix(torch.tensor([[10.0, -5.0, 3.0]], device=dev))
        kp_d = transform_keypoints(
            cache.kp_canonical.float(),
            rot,
            torch.zeros(1, 3, device=dev),
            torch.zeros_like(cache.kp_canonical.float()),
        )

    def run(fn: Callable[[], object]) -> float:
        with runtime.autocast():
            return time_ms(fn, dev, warmup, reps)

    sender = run(lambda: (model.head_pose(img), model.expression(img)))
    receiver = run(lambda: model.animate(cache, rot, kp_d))
    key_fl = run(lambda: (model.appearance(img), model.canonical(img)))
    key_all = run(lambda: model.source(img))
    prec = "bf16" if runtime.dtype == torch.bfloat16 else "fp32"
    print(
        f"  {name:<5} {dev.type:<4} {prec}  sender H+Δ {sender:9.1f} ms   receiver M+G {receiver:9.1f} ms   "
        f"keyframe F+L {key_fl:9.1f} ms (F+L+H+Δ {key_all:9.1f} ms)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["tiny", "small", "base"])
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions (CPU); CUDA uses 10x")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument(
        "--cpu-bf16",
        choices=["auto", "always", "never"],
        default="auto",
        help="auto: time CPU bf16 for base only where the CPU has native bf16",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    native = cpu_has_native_bf16()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, native CPU bf16: {native}, "
        f"CUDA: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}"
    )
    for name in args.configs:
        report_sizes(name)
    print("\nms per frame (batch 1)")
    for name in args.configs:
        bench(name, select_runtime("cpu", "fp32"), args.warmup, args.reps)
        if args.cpu_bf16 == "always" or (args.cpu_bf16 == "auto" and (native or name == "tiny")):
            bench(name, select_runtime("cpu", "bf16"), args.warmup, args.reps)
        elif args.cpu_bf16 == "auto":
            print(f"  {name:<5} cpu  bf16  skipped: {SLOW_CPU_BF16} (--cpu-bf16 always to time it)")
        if torch.cuda.is_available():
            bench(name, select_runtime("cuda", "auto"), args.warmup * 5, args.reps * 10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
