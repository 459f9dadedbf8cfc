"""Rate of the parameter stream and the keyframe, wire format v1 against v2, per real clip.

    python benchmarks/fit_entropy.py --extract-only   # once: the real sender over every clip, cached
    python benchmarks/param_rate.py --out results/param_rate

Per clip it takes what the real sender (codec.encoder.FaceEncoder, default settings) produced on the
clip: v1 is the PARAMS bytes it emitted and its keyframe sizes; v2 codes the very same quantized
values with the shipped probability model into v2 PARAMS messages (codec.packet, k frames per
message) and the same keyframe crops with the v2 picture settings and the shape-coded rig. Payload
is codec bytes, wire adds the data channel's per-message SCTP/DTLS/UDP/IPv4 overhead (codec.rate).

    steady  = PARAMS messages only (the rate a long call converges to)
    60 s    = steady + keyframes of a 60-second call: the first one plus refreshes at the clip's own
              refresh rate ((keyframes - 1) / clip duration), each at the clip's mean keyframe size

Prints one row per clip (held-out persons marked *), means over all clips and over the held-out ones,
and writes param_rate.json. Targets (checked here, not in a timed test): mean PARAMS payload
<= 10 bytes/frame at the default k, steady wire <= 12 kbit/s.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import msgpack
import numpy as np

from benchmarks.harness.param_cache import DEFAULT_CACHE, DEFAULT_CLIPS, DEFAULT_FRAMES, ClipData, load_all, split
from codec import entropy, keyframe, profiles, wire
from codec.params import INT8_MAX, QuantSpec
from codec.profiles import DEFAULT_PROFILE
from codec.rate import data_channel_wire_bytes
from models.mesh import shape

CALL_S = 60.0
TARGET_BYTES_PER_FRAME = 10.0
TARGET_STEADY_WIRE_KBPS = 12.0
BATCHES = (1, 2, 3, 4)
DEFAULT_BATCH = 2


def keyframe_message_bytes(h264: int, aux: int, box: bool) -> int:
    """The keyframe payload: msgpack {h264, aux} (v1 also carried an unused crop box of 3 ints)."""
    m = {"h264": b"\0" * h264, "aux": b"\0" * aux} | ({"box": [0, 0, 0]} if box else {})
    return len(msgpack.packb(m, use_bin_type=True))


def v2_keyframe(d: ClipData) -> tuple[float, float, float]:
    """Mean (total, picture, rig) bytes of the clip's keyframes in v2: picture + shape-coded rig."""
    model = shape.shipped()
    pics, rigs = [], []
    for crop, lm in zip(d.arrays["kf_crops"], d.arrays["kf_landmarks"], strict=True):
        pics.append(len(keyframe.encode(crop)))
        rigs.append(len(shape.encode(lm, crop.shape[0], model)) if model is not None else 0)
    pic, rig = float(np.mean(pics)), float(np.mean(rigs))
    total = float(np.mean([keyframe_message_bytes(p, r, False) for p, r in zip(pics, rigs, strict=True)]))
    return total, pic, rig


def clip_rates(d: ClipData, coder: entropy.Coder, steps: np.ndarray, k: int) -> dict:
    """v2 PARAMS messages of one clip at k frames per message: bytes and message count."""
    a = d.arrays
    fps = float(a["fps"])
    sizes = []
    for kf in np.unique(a["kf"][a["sent"]]):
        idx = np.flatnonzero(a["sent"] & (a["kf"] == kf))
        q = np.clip(np.rint(a["vec"][idx] / steps), -INT8_MAX, INT8_MAX).astype(np.int64)
        ms = np.rint(idx * 1000 / fps).astype(int)
        for i in range(0, len(idx), k):
            msg = wire.Params(int(ms[i]), int(kf), wire.Flags.NONE, tuple(q[i : i + k]), tuple(ms[i : i + k] - ms[i]))
            sizes.append(len(wire.encode(msg, coder)))
    return {"bytes": sizes, "frames": int(a["sent"].sum())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=Path, default=DEFAULT_CLIPS)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--frames", type=int, default=DEFAULT_FRAMES)
    ap.add_argument("--quant-scale", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=Path("results/param_rate"))
    a = ap.parse_args(argv)
    if not a.clips.is_dir():
        print(f"param_rate: no clips at {a.clips}", file=sys.stderr)
        return 1
    data = load_all(a.clips, a.cache, a.frames)
    held = {d.clip for d in split(data)[1]}
    n_expr = int(data[0].arrays["n_expr"])
    model = entropy.load(DEFAULT_PROFILE, n_expr, profiles.get(DEFAULT_PROFILE).basis_id())
    quant = QuantSpec().scaled(a.quant_scale)
    steps = quant.steps(n_expr)
    rows = []
    print(f"model {model.name} ({model.model_id()}), quant x{a.quant_scale:g}; kbit/s payload/wire")
    print(
        f"{'clip':46s} {'B/frame v1':>10s} {'v2 k=1':>7s} {'k=2':>5s} | {'steady v1':>11s} {'v2 k=1':>11s} "
        f"{'v2 k=2':>11s} | {'60 s v1':>11s} {'v2 k=2':>11s} | {'kf v1':>6s} {'kf v2 (pic+rig)':>16s}"
    )
    for d in data:
        a_ = d.arrays
        fps, n = float(a_["fps"]), len(a_["vec"])
        dur = n / fps
        sent = a_["v1_params_bytes"][a_["v1_params_bytes"] > 0]
        n_kf = len(a_["kf_h264_bytes"])
        if n_kf == 0 or not a_["sent"].any():
            continue
        v1_kf = zip(a_["kf_h264_bytes"], a_["kf_aux_bytes"], strict=True)
        kf_v1 = float(np.mean([keyframe_message_bytes(h, x, True) for h, x in v1_kf]))
        kf_v2, pic, rig = v2_keyframe(d)
        kf_per_call = 1 + (n_kf - 1) / dur * CALL_S
        row = {
            "clip": d.clip,
            "person": d.person,
            "held_out": d.clip in held,
            "frames": n,
            "fps": fps,
            "sent_frames": int(a_["sent"].sum()),
            "keyframes": n_kf,
            "v1": {
                "bytes_per_frame": float(sent.mean()),
                "steady_payload_kbps": float(sent.sum()) * 8 / 1000 / dur,
                "steady_wire_kbps": float(sum(data_channel_wire_bytes(int(b)) for b in sent)) * 8 / 1000 / dur,
                "keyframe_bytes": kf_v1,
            },
            "v2": {"keyframe_bytes": kf_v2, "picture_bytes": pic, "rig_bytes": rig},
        }
        for k in BATCHES:
            r = clip_rates(d, entropy.Coder(model, quant, fps), steps, k)
            row["v2"][f"k{k}"] = {
                "bytes_per_frame": sum(r["bytes"]) / r["frames"],
                "messages_per_s": len(r["bytes"]) / dur,
                "steady_payload_kbps": sum(r["bytes"]) * 8 / 1000 / dur,
                "steady_wire_kbps": sum(data_channel_wire_bytes(b) for b in r["bytes"]) * 8 / 1000 / dur,
            }
        for ver, kf_b, key in (("v1", kf_v1, None), ("v2", kf_v2, f"k{DEFAULT_BATCH}")):
            s = row[ver] if key is None else row[ver][key]
            amort = kf_b * kf_per_call * 8 / 1000 / CALL_S
            kf_wire = (kf_b + data_channel_wire_bytes(0)) * kf_per_call * 8 / 1000 / CALL_S
            row[ver]["call60_payload_kbps"] = s["steady_payload_kbps"] + amort
            row[ver]["call60_wire_kbps"] = s["steady_wire_kbps"] + kf_wire
        rows.append(row)
        v1, v2 = row["v1"], row["v2"]
        print(
            f"{d.clip[4:45] + ('*' if row['held_out'] else ''):46s} {v1['bytes_per_frame']:10.1f} "
            f"{v2['k1']['bytes_per_frame']:7.2f} {v2['k2']['bytes_per_frame']:5.2f} | "
            f"{v1['steady_payload_kbps']:5.1f}/{v1['steady_wire_kbps']:5.1f} "
            f"{v2['k1']['steady_payload_kbps']:5.2f}/{v2['k1']['steady_wire_kbps']:5.1f} "
            f"{v2['k2']['steady_payload_kbps']:5.2f}/{v2['k2']['steady_wire_kbps']:5.1f} | "
            f"{v1['call60_payload_kbps']:5.1f}/{v1['call60_wire_kbps']:5.1f} "
            f"{v2['call60_payload_kbps']:5.2f}/{v2['call60_wire_kbps']:5.1f} | "
            f"{kf_v1:6.0f} {kf_v2:6.0f} ({pic:4.0f}+{rig:3.0f})"
        )
    summary = {}
    for name, sel in (("all", rows), ("held_out", [r for r in rows if r["held_out"]])):

        def m(f, sel=sel):
            return float(np.mean([f(r) for r in sel]))

        summary[name] = {
            "clips": len(sel),
            "v1_bytes_per_frame": m(lambda r: r["v1"]["bytes_per_frame"]),
            **{f"v2_k{k}_bytes_per_frame": m(lambda r, k=k: r["v2"][f"k{k}"]["bytes_per_frame"]) for k in BATCHES},
            "v1_steady_wire_kbps": m(lambda r: r["v1"]["steady_wire_kbps"]),
            **{f"v2_k{k}_steady_wire_kbps": m(lambda r, k=k: r["v2"][f"k{k}"]["steady_wire_kbps"]) for k in BATCHES},
            "v1_steady_payload_kbps": m(lambda r: r["v1"]["steady_payload_kbps"]),
            "v2_k2_steady_payload_kbps": m(lambda r: r["v2"]["k2"]["steady_payload_kbps"]),
            "v1_call60_payload_kbps": m(lambda r: r["v1"]["call60_payload_kbps"]),
            "v1_call60_wire_kbps": m(lambda r: r["v1"]["call60_wire_kbps"]),
            "v2_call60_payload_kbps": m(lambda r: r["v2"]["call60_payload_kbps"]),
            "v2_call60_wire_kbps": m(lambda r: r["v2"]["call60_wire_kbps"]),
            "v1_keyframe_bytes": m(lambda r: r["v1"]["keyframe_bytes"]),
            "v2_keyframe_bytes": m(lambda r: r["v2"]["keyframe_bytes"]),
            "v2_picture_bytes": m(lambda r: r["v2"]["picture_bytes"]),
            "v2_rig_bytes": m(lambda r: r["v2"]["rig_bytes"]),
        }
        s = summary[name]
        print(
            f"\nmean over {s['clips']} clips ({name}): bytes/frame v1 {s['v1_bytes_per_frame']:.1f}, v2 "
            + ", ".join(f"k={k} {s[f'v2_k{k}_bytes_per_frame']:.2f}" for k in BATCHES)
        )
        print(
            "  steady wire kbit/s: v1 "
            + f"{s['v1_steady_wire_kbps']:.1f}, v2 "
            + ", ".join(f"k={k} {s[f'v2_k{k}_steady_wire_kbps']:.1f}" for k in BATCHES)
        )
        print(
            f"  60 s call kbit/s payload/wire: v1 {s['v1_call60_payload_kbps']:.2f}/{s['v1_call60_wire_kbps']:.1f}, "
            f"v2 (k={DEFAULT_BATCH}) {s['v2_call60_payload_kbps']:.2f}/{s['v2_call60_wire_kbps']:.1f}"
        )
        print(
            f"  keyframe bytes: v1 {s['v1_keyframe_bytes']:.0f}, v2 {s['v2_keyframe_bytes']:.0f} "
            f"(picture {s['v2_picture_bytes']:.0f} + rig {s['v2_rig_bytes']:.0f})"
        )
    s = summary["all"]
    ok_rate = s[f"v2_k{DEFAULT_BATCH}_bytes_per_frame"] <= TARGET_BYTES_PER_FRAME
    ok_wire = s[f"v2_k{DEFAULT_BATCH}_steady_wire_kbps"] <= TARGET_STEADY_WIRE_KBPS
    print(
        f"\ntarget <= {TARGET_BYTES_PER_FRAME:g} B/frame at k={DEFAULT_BATCH}: {'met' if ok_rate else 'MISSED'}; "
        f"steady wire <= {TARGET_STEADY_WIRE_KBPS:g} kbit/s: {'met' if ok_wire else 'MISSED'}"
    )
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "param_rate.json").write_text(
        json.dumps({"summary": summary, "clips": rows, "model": model.name, "quant_scale": a.quant_scale}, indent=1)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
