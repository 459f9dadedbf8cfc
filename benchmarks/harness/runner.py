"""One clip through every configuration: the work of one progress-bar unit, resumable per JSON."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import numpy as np

from codec import metrics as met
from models.face import CropBox, FaceDetector, FaceMesh

from . import anchors as anc
from . import clips as clp
from . import face_metrics as fm
from . import fvcall as fv
from . import media, scoring
from . import perceptual as pm
from .rate import data_channel_rate, rtp_rate

SCHEMA = 2  # bump when a result file's meaning changes: older files are recomputed
RUNS_DIR = "runs"  # per clip x configuration JSONs, under --out

Progress = Callable[[str], None]


@dataclass
class RunOptions:
    size: int
    frames: int | None
    scored_frames: int
    anchors: list[anc.AnchorConfig]
    fv_configs: list[fv.FvConfig]
    out: Path
    force: bool = False
    weights: Path | None = None
    use_vmaf: bool = True
    versions: dict[str, object] = field(default_factory=dict)
    face_metrics: bool = True
    """dlib AKD / identity / expression (needs the bench extra)."""
    perceptual_weights: Path | None = None
    """Folder with the LPIPS / DISTS weight files (perceptual.py); None: not computed."""
    media: bool = True
    """Per clip contact sheet and side-by-side video."""

    def run_key(self) -> dict[str, object]:
        """What must match for a cached result to be reused."""
        return {
            "schema": SCHEMA,
            "size": self.size,
            "frames": self.frames,
            "scored_frames": self.scored_frames,
            "vmaf": self.use_vmaf,
            "face_metrics": self.face_metrics,
            "perceptual": str(self.perceptual_weights) if self.perceptual_weights else None,
        }


def result_path(out: Path, clip_id: str, config_name: str) -> Path:
    return out / RUNS_DIR / f"{clip_id}__{config_name}.json"


def complete_path(out: Path, clip_id: str) -> Path:
    """Marker written when every configuration of a clip is done (an interrupted clip stays out of summaries)."""
    return out / RUNS_DIR / f"{clip_id}.complete"


def finite_or_none(x: float) -> float | None:
    return x if isinstance(x, float | int) and math.isfinite(x) else None


def _clean(obj: object) -> object:
    """JSON has no NaN: None instead."""
    if isinstance(obj, float):
        return finite_or_none(obj)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def _cached(path: Path, opts: RunOptions) -> bool:
    if opts.force or not path.exists():
        return False
    try:
        return json.loads(path.read_text()).get("run_key") == opts.run_key()
    except (OSError, ValueError):
        return False


def _write(path: Path, doc: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_clean(doc), indent=1))
    tmp.replace(path)  # atomic: an interrupted run never leaves a half file that looks cached


def clip_fps(path: Path) -> float:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return float(s.average_rate) if s.average_rate else clp.DEFAULT_FPS


def configs_for(opts: RunOptions, fps: float) -> list[str]:
    return [c.name for c in opts.fv_configs] + [a.name for a in opts.anchors if a.applies(fps)]


def all_cached(opts: RunOptions, clip_id: str, fps: float) -> bool:
    media_done = not opts.media or media.done(opts.out, clip_id)
    return media_done and all(_cached(result_path(opts.out, clip_id, n), opts) for n in configs_for(opts, fps))


def _seed(clip_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(clip_id.encode(), digest_size=4).digest(), "little")


def _rle_boxes(boxes: list[CropBox]) -> list[list[int]]:
    """[[first_frame, x0, y0, side], ...] for each run of the same box."""
    out: list[list[int]] = []
    for i, b in enumerate(boxes):
        if not out or out[-1][1:] != b.to_list():
            out.append([i, *b.to_list()])
    return out


def process_clip(source: Path | None, root: Path | None, opts: RunOptions, progress: Progress) -> list[str]:
    """Run every configuration not cached yet on one clip (source None: the embedded sample).

    Returns notes for the log."""
    notes: list[str] = []
    detector = FaceDetector()
    mesh = FaceMesh(video=False)
    try:
        if source is None:
            clip = clp.load_sample(opts.frames, detector)
        else:
            assert root is not None
            clip = clp.load_clip(source, root, opts.frames, detector)
    finally:
        detector.close()
    if clip is None:
        mesh.close()
        return [f"{source}: no face in any frame, skipped"]
    todo_fv = [c for c in opts.fv_configs if not _cached(result_path(opts.out, clip.clip_id, c.name), opts)]
    todo_an = [
        a
        for a in opts.anchors
        if a.applies(clip.fps) and not _cached(result_path(opts.out, clip.clip_id, a.name), opts)
    ]
    n = len(clip.frames)
    scored = met.choose_frames(n, opts.scored_frames, _seed(clip.clip_id))
    want = set(scored)
    base = {
        "clip": clip.clip_id,
        "source": clip.source,
        "clip_fps": clip.fps,
        "frames": n,
        "skipped_frames_before_face": clip.skipped_frames,
        "size": opts.size,
        "run_key": opts.run_key(),
        "scored_frames": scored,
        "vmaf_frames": scored[:: met.VMAF_FRAME_SHARE],
    }
    profiles = sorted({c.profile for c in opts.fv_configs})
    estimators = {p: fv.make_caching_estimator(p, opts.size, opts.weights) for p in profiles}
    references: dict[tuple, scoring.Scorer] = {}
    analyzer = fm.FaceAnalyzer() if opts.face_metrics else None
    perceptual = pm.Perceptual.from_dir(opts.perceptual_weights) if opts.perceptual_weights else None

    def reference_for(boxes: list[CropBox]) -> scoring.Scorer:
        key = tuple(tuple(b.to_list()) for b in boxes)
        if key not in references:
            crops_ = clp.crops(clip.frames, boxes, opts.size)
            references[key] = scoring.Scorer(crops_, scored, mesh, opts.use_vmaf, analyzer, perceptual)
        return references[key]

    fv_cache: dict[tuple[str, fv.FvSetting], tuple[fv.FvRun, scoring.Scores, float]] = {}

    def fv_point(profile: str, s: fv.FvSetting) -> tuple[fv.FvRun, scoring.Scores, float]:
        if (profile, s) not in fv_cache:
            t0 = time.perf_counter()
            r = fv.run_setting(
                clip.frames, clip.fps, clip.box, profile, opts.size, s, estimators[profile], want, opts.weights
            )
            fv_cache[(profile, s)] = (r, reference_for(r.boxes).score(r.outputs), time.perf_counter() - t0)
        return fv_cache[(profile, s)]

    try:
        # The reference crops: the ones the default fvcall encoder cut (identical to the fixed box unless
        # it re-centred). The anchors get exactly these crops.
        lead = profiles[0] if profiles else None
        if lead is not None:
            ref_boxes = fv_point(lead, fv.DEFAULT_SETTING)[0].boxes
        else:
            ref_boxes = [clip.box] * n
        if any(b != clip.box for b in ref_boxes):
            notes.append(f"{clip.clip_id}: the encoder re-centred; anchors use its crops")
        for cfg in todo_fv:
            points = []
            for s in cfg.settings:
                run, sc, secs = fv_point(cfg.profile, s)
                rate = data_channel_rate(run.messages, n, clip.fps)
                points.append(
                    {
                        "setting": fv.setting_dict(s),
                        "label": s.label(),
                        "rate": rate.to_dict(),
                        "metrics": sc.means,
                        "kp_missing": sc.kp_missing,
                        "face_missing": sc.face_missing,
                        "stats": run.stats,
                        "boxes": _rle_boxes(run.boxes),
                        "seconds": secs,
                        "per_frame": sc.per_frame,
                    }
                )
                progress(f"{clip.clip_id} {cfg.name} {s.label()}")
            _write(
                result_path(opts.out, clip.clip_id, cfg.name),
                {
                    **base,
                    "name": cfg.name,
                    "kind": "fvcall",
                    "family": cfg.profile,
                    "knob": cfg.knob,
                    "settings": {
                        "profile": cfg.profile,
                        "knob": cfg.knob,
                        "fps": clip.fps,
                        "transport": "WebRTC data channels (SCTP/DTLS/UDP/IPv4)",
                    },
                    "versions": opts.versions,
                    "points": points,
                },
            )
        if todo_an:
            crops = clp.crops(clip.frames, ref_boxes, opts.size)
            ref = reference_for(ref_boxes)
            for cfg in todo_an:
                spec = anc.CODECS[cfg.codec]
                points = []
                banner = ""
                for v in cfg.values:
                    t0 = time.perf_counter()
                    run = anc.encode_point(crops, clip.fps, cfg, v, want)
                    sc = ref.score(run.outputs)
                    banner = banner or run.banner
                    rate = rtp_rate(run.messages, n, clip.fps)
                    points.append(
                        {
                            "setting": {spec.quality_option: v},
                            "label": f"{spec.quality_option}{v}",
                            "rate": rate.to_dict(),
                            "metrics": sc.means,
                            "kp_missing": sc.kp_missing,
                            "face_missing": sc.face_missing,
                            "sei_bytes_stripped": run.stripped_bytes,
                            "seconds": time.perf_counter() - t0,
                            "per_frame": sc.per_frame,
                        }
                    )
                    progress(f"{clip.clip_id} {cfg.name} {v}")
                _write(
                    result_path(opts.out, clip.clip_id, cfg.name),
                    {
                        **base,
                        "name": cfg.name,
                        "kind": "anchor",
                        "family": cfg.codec,
                        "settings": {
                            "encoder": spec.encoder,
                            "decoder": spec.decoder,
                            "options": spec.options,
                            "quality_option": spec.quality_option,
                            "scale": cfg.scale,
                            "coded_size": opts.size // cfg.scale,
                            "fps": cfg.fps if cfg.fps is not None else clip.fps,
                            "downscale": "cv2.INTER_AREA",
                            "upscale": "cv2.INTER_LANCZOS4",
                            "transport": "RTP/SRTP/UDP/IPv4, FU-A above 1200 bytes",
                        },
                        "versions": {**opts.versions, "encoder_banner": banner},
                        "points": points,
                    },
                )
        if opts.media and (opts.force or not media.done(opts.out, clip.clip_id)) and lead is not None:
            crops = clp.crops(clip.frames, ref_boxes, opts.size)
            scorer = reference_for(ref_boxes)

            def render_fv(frames_wanted: set[int]) -> dict[int, np.ndarray]:
                s = fv.DEFAULT_SETTING
                r = fv.run_setting(
                    clip.frames, clip.fps, clip.box, lead, opts.size, s, estimators[lead], frames_wanted, opts.weights
                )
                return r.outputs

            notes += media.make(opts.out, clip.clip_id, clip.fps, crops, scored, scorer, lead, render_fv, opts.anchors)
            progress(f"{clip.clip_id} media")
        # every configuration of this clip is on disk: its figures may enter the summary
        complete_path(opts.out, clip.clip_id).write_text(json.dumps({"clip": clip.clip_id, "run_key": opts.run_key()}))
    finally:
        for e in estimators.values():
            e.close_inner()
        mesh.close()
    return notes


def count_units(opts: RunOptions, fps: float) -> int:
    """Progress-bar units of one clip: one per point."""
    points = sum(len(c.settings) for c in opts.fv_configs) + sum(len(a.values) for a in opts.anchors if a.applies(fps))
    return points + (1 if opts.media else 0)


def options_dict(opts: RunOptions) -> dict[str, object]:
    return {
        "size": opts.size,
        "frames": opts.frames,
        "scored_frames": opts.scored_frames,
        "anchors": [asdict(a) | {"name": a.name} for a in opts.anchors],
        "fvcall": [{"name": c.name, "settings": [asdict(s) for s in c.settings]} for c in opts.fv_configs],
    }
