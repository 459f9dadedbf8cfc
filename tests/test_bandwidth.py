"""benchmarks/bandwidth.py: BD-rate, rate accounting, metrics, and one --quick run on a real clip."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.harness import anchors, bdrate, face_metrics, scoring
from benchmarks.harness.rate import Message, call_kbps, data_channel_rate, rtp_rate
from codec import metrics

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

QUICK_RUN_LIMIT_S = 300  # a hang guard only: the quick run takes ~20 s on an idle 2-core machine


# -- BD-rate and ratios -------------------------------------------------------------------------


def test_bd_rate_hand_computed() -> None:
    # Anchor: log10(rate) = q / 10 on q in [30, 40]; test: the same line shifted up by 0.1 decades,
    # on q in [32, 42]. Shared range [32, 40]; the log-rate gap is 0.1 everywhere -> 10**0.1 - 1.
    qa = np.arange(30, 41, 2.0)
    qt = np.arange(32, 43, 2.0)
    bd = bdrate.bd_rate(10 ** (qa / 10), qa, 10 ** (qt / 10 + 0.1), qt)
    assert bd == pytest.approx((10**0.1 - 1) * 100, abs=1e-9)  # +25.89 %


def test_bd_rate_half_the_bits_is_minus_50_percent() -> None:
    q = [30.0, 33.0, 35.0, 38.0]
    r = [100.0, 180.0, 300.0, 700.0]
    assert bdrate.bd_rate(r, q, [x / 2 for x in r], q) == pytest.approx(-50.0, abs=1e-9)


def test_bd_rate_identical_curves_is_zero() -> None:
    q = [0.80, 0.86, 0.90, 0.95]
    r = [4.0, 9.0, 20.0, 60.0]
    assert bdrate.bd_rate(r, q, r, q) == pytest.approx(0.0, abs=1e-12)


def test_bd_rate_without_overlap_is_none() -> None:
    assert bdrate.bd_rate([1, 2], [20, 25], [3, 4], [30, 35]) is None
    assert bdrate.bd_rate([1], [20], [3, 4], [18, 35]) is None  # one point is no curve


def test_ratio_at_equal_quality_hand_computed() -> None:
    # Anchor: 1 kbit/s at 30 dB, 10 kbit/s at 40 dB (log-linear between two points): 35 dB needs 10**0.5.
    ratio, note = bdrate.ratio_at_equal_quality([1.0, 10.0], [30.0, 40.0], rate=1.0, quality=35.0)
    assert ratio == pytest.approx(10**0.5) and note == ""
    ratio, note = bdrate.ratio_at_equal_quality([1.0, 10.0], [30.0, 40.0], rate=1.0, quality=25.0)
    assert ratio is None and "below" in note


def test_lower_envelope_keeps_only_undominated_points() -> None:
    r, q = bdrate.lower_envelope([5, 1, 3, 2, 4, 2], [40, 20, 25, 30, 35, 10])
    assert r.tolist() == [1, 2, 4, 5] and q.tolist() == [20, 30, 35, 40]


# -- rate accounting ----------------------------------------------------------------------------


def test_data_channel_rate_is_exact() -> None:
    # 25 frames at 25 fps = 1 s: a 1000-byte keyframe message and 24 parameter messages of 30 bytes.
    msgs = [Message(1000, keyframe=True)] + [Message(30)] * 24
    r = data_channel_rate(msgs, n_frames=25, fps=25.0)
    # per message: IPv4+UDP 28, DTLS 37, SCTP common header 12, DATA chunk 16 + payload padded to 4
    wire_kf = 28 + 37 + 12 + 1016
    wire_p = 28 + 37 + 12 + 48  # 16 + 30 = 46 -> 48
    assert r.duration_s == 1.0
    assert r.payload_kbps == pytest.approx((1000 + 24 * 30) * 8 / 1000)
    assert r.wire_kbps == pytest.approx((wire_kf + 24 * wire_p) * 8 / 1000)
    assert r.keyframe_bytes == 1000
    assert r.keyframe_kbps_amortized == pytest.approx(8.0)
    assert r.stream_payload_kbps == pytest.approx(24 * 30 * 8 / 1000)
    assert r.stream_wire_kbps == pytest.approx(24 * wire_p * 8 / 1000)
    assert r.messages == 25


def test_rtp_rate_is_exact() -> None:
    # 50 frames at 25 fps = 2 s: a 2500-byte IDR (3 FU-A fragments) and 49 frames of 40 bytes.
    frames = [Message(2500, keyframe=True)] + [Message(40)] * 49
    r = rtp_rate(frames, n_frames=50, fps=25.0)
    per_packet = 28 + 12 + 10  # IPv4+UDP, RTP, SRTP tag
    wire = (2500 + 3 * 2 + 3 * per_packet) + 49 * (40 + per_packet)
    assert r.payload_kbps == pytest.approx((2500 + 49 * 40) * 8 / 1000 / 2)
    assert r.wire_kbps == pytest.approx(wire * 8 / 1000 / 2)
    assert r.keyframe_kbps_amortized == pytest.approx(2500 * 8 / 1000 / 2)


def test_call_rate_amortizes_the_start_up_bytes_over_the_call() -> None:
    # 2 s clip: a 1000-byte start-up message, then 50 messages of 20 bytes (1000 bytes in 2 s = 4 kbit/s).
    msgs = [Message(1000, keyframe=True, startup=True)] + [Message(20)] * 50
    r = data_channel_rate(msgs, n_frames=50, fps=25.0).to_dict()
    assert r["startup_bytes"] == 1000
    assert call_kbps(r, 2.0) == pytest.approx(r["payload_kbps"])  # a call as long as the clip: the clip's rate
    assert call_kbps(r, 10.0) == pytest.approx(4.0 + 0.8)  # 8000 bits over 10 s
    assert call_kbps(r, 600.0) == pytest.approx(4.0 + 8 / 600)
    wire_start = 28 + 37 + 12 + 1016
    assert r["startup_wire_bytes"] == wire_start
    assert call_kbps(r, 60.0, wire=True) == pytest.approx(
        (r["wire_kbps"] * 2 - wire_start * 8 / 1000) / 2 + wire_start * 8 / 1000 / 60
    )


# -- anchors ------------------------------------------------------------------------------------


def test_sent_frames_reduce_the_frame_rate() -> None:
    assert sum(anchors.sent_frames(25, 25.0, 10.0)) == 10
    assert sum(anchors.sent_frames(30, 30.0, 15.0)) == 15
    assert all(anchors.sent_frames(12, 12.0, 15.0))  # never above the clip's own rate
    assert anchors.sent_frames(5, 25.0, 10.0)[0]


def test_strip_sei_keeps_everything_else() -> None:
    sps, sei, idr = b"\x00\x00\x00\x01\x67abc", b"\x00\x00\x01\x06banner", b"\x00\x00\x01\x65pixels"
    assert anchors.strip_nal_units(sps + sei + idr, frozenset({6}), hevc=False) == sps + idr
    hevc_sei = b"\x00\x00\x01" + bytes([39 << 1, 1]) + b"x265"
    assert anchors.strip_nal_units(sps + hevc_sei, frozenset({39, 40}), hevc=True) == sps


@pytest.mark.skipif(not anchors.available("x264-medium"), reason="PyAV without libx264")
def test_x264_anchor_round_trip_and_rate_falls_with_crf() -> None:
    rng = np.random.default_rng(0)
    base = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    import cv2

    base = cv2.resize(cv2.GaussianBlur(base, (7, 7), 2), (128, 128))
    crops = [np.roll(base, i, axis=1) for i in range(10)]
    cfg = anchors.AnchorConfig("x264-medium", values=(20, 51))
    hi = anchors.encode_point(crops, 25.0, cfg, 20, set(range(10)))
    lo = anchors.encode_point(crops, 25.0, cfg, 51, set(range(10)))
    assert len(hi.outputs) == 10 and hi.outputs[0].shape == (128, 128, 3)
    assert sum(m.payload_bytes for m in lo.messages) < sum(m.payload_bytes for m in hi.messages)
    assert hi.messages[0].keyframe and not any(m.keyframe for m in hi.messages[1:])
    assert hi.messages[0].startup and not any(m.startup for m in hi.messages[1:])
    assert hi.stripped_bytes > 0 and "x264" in hi.banner  # the encoder's text banner is not counted
    # a high-quality IDR: at the same CRF the first frame costs more bits and looks better
    hq = anchors.encode_point(crops, 25.0, anchors.AnchorConfig("x264-hqidr"), 51, set(range(10)))
    assert hq.messages[0].payload_bytes > lo.messages[0].payload_bytes
    assert metrics.psnr(crops[0], hq.outputs[0]) > metrics.psnr(crops[0], lo.outputs[0])


# -- metrics ------------------------------------------------------------------------------------


def _pair() -> tuple[np.ndarray, np.ndarray]:
    import cv2

    rng = np.random.default_rng(1)
    a = cv2.GaussianBlur((rng.random((192, 192)) * 255).astype(np.float32), (0, 0), 3) * 3
    a = np.clip(a - a.mean() + 128, 0, 255).astype(np.float32)
    b = np.clip(a + rng.normal(0, 8, a.shape), 0, 255).astype(np.float32)
    return a, b


def test_ssim_matches_pytorch_msssim() -> None:
    import torch
    from pytorch_msssim import ssim as torch_ssim

    a, b = _pair()
    ref = float(torch_ssim(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None], data_range=255))
    assert metrics.ssim(a, b) == pytest.approx(ref, abs=2e-3)
    assert metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-6)
    assert metrics.psnr(a, a) == metrics.MAX_PSNR_DB


def test_msssim_weights_fit_the_image() -> None:
    assert len(metrics.msssim_weights(256)) == 5
    w = metrics.msssim_weights(128)
    assert len(w) == 4 and math.isclose(sum(w), 1.0)
    a, b = _pair()
    v = metrics.ms_ssim_batch(np.stack([a, a]), np.stack([a, b]))
    assert v[0] == pytest.approx(1.0, abs=1e-5) and 0.5 < v[1] < 1.0


@pytest.mark.parametrize("side", [256, 171])
def test_ms_ssim_matches_pytorch_msssim(side: int) -> None:
    import cv2
    import torch
    from pytorch_msssim import ms_ssim

    a, b = _pair()
    a, b = cv2.resize(a, (side, side + 3)), cv2.resize(b, (side, side + 3))  # odd sizes: padded pooling
    w = metrics.msssim_weights(side)
    ref = ms_ssim(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None], data_range=255, weights=w)
    assert metrics.ms_ssim_y(a, b) == pytest.approx(float(ref), abs=1e-4)


def test_vmaf_identical_is_high_and_noise_lowers_it() -> None:
    pytest.importorskip("vmaf_torch")
    import torch
    import vmaf_torch

    torch.set_num_threads(1)  # like bandwidth.py: small tensors, and a second thread only spins on a busy box
    a, b = _pair()
    vm = vmaf_torch.VMAF(enable_motion=False, clip_score=True)
    ref = torch.from_numpy(np.stack([a, a]))[:, None]
    with torch.no_grad():
        same = vm(ref, ref)[:, 0]
        noisy = vm(ref, torch.from_numpy(np.stack([b, b]))[:, None])[:, 0]
    assert float(same.min()) > 95 and float(noisy.max()) < float(same.min()) - 5


# -- the script ---------------------------------------------------------------------------------


@pytest.mark.skipif(not DATA.is_dir(), reason=f"real clips absent: {DATA} (see shared/data/MANIFEST.md)")
def test_quick_run_writes_every_file(tmp_path: Path) -> None:
    out = tmp_path / "bw"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "bandwidth.py"),
        "--quick",
        "--clips",
        str(DATA),
        "--out",
        str(out),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=QUICK_RUN_LIMIT_S, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    runs = sorted((out / "runs").glob("*.json"))
    names = {json.loads(p.read_text())["name"] for p in runs}
    assert {"mesh~quant", "mesh~every", "x264-medium"} <= names
    doc = json.loads(runs[0].read_text())
    for key in ("name", "versions", "settings", "points"):
        assert key in doc
    point = doc["points"][0]
    assert {"payload_kbps", "wire_kbps", "keyframe_bytes", "keyframe_kbps_amortized"} <= set(point["rate"])
    assert set(scoring.METRICS) <= set(point["metrics"])
    assert point["rate"]["startup_bytes"] > 0
    with_face = [m for m in face_metrics.FACE_METRICS if face_metrics.available()]
    assert all(point["metrics"][m] is not None for m in ("akd68", "id_dist", "face_missing") if m in with_face)
    for f in ("summary.md", "summary.json", *(f"rd_{m}.png" for m in [*metrics.METRICS, *with_face[:3]])):
        assert (out / f).is_file(), f
    summary = json.loads((out / "summary.json").read_text())
    mesh = summary["profiles"]["mesh"]
    assert set(scoring.METRICS) <= set(mesh["ratio_at_equal_quality"])
    assert set(scoring.METRICS) <= set(mesh["bd_rate_vs_envelope"])
    for kind in ("call10", "call60", "call600", "wire_call60", "payload"):
        assert set(scoring.METRICS) <= set(mesh["by_rate"][kind]["bd_rate_vs_x264"])
    r = mesh["rates"]
    assert r["call10"] > r["call60"] > r["call600"] > 0 and r["wire_call60"] > r["call60"]
    assert len(summary["clips"]) == 1
    clip = summary["clips"][0]
    sheet = out / "media" / f"{clip}__sheet.png"
    assert sheet.is_file() and (out / "media" / f"{clip}__side_by_side.mp4").is_file()
    md = (out / "summary.md").read_text()
    assert md.index("## mesh: 60 s call") < md.index("### mesh: 10 s and 10 min") and f"media/{clip}__sheet.png" in md
    import cv2

    img = cv2.imread(str(sheet))
    assert img.shape[1] == 4 * 256  # input | fvcall | x264 | envelope

    # resume: a second run finds everything cached, runs nothing, and still writes the summary
    res2 = subprocess.run(cmd, capture_output=True, text=True, timeout=QUICK_RUN_LIMIT_S, cwd=ROOT)
    assert res2.returncode == 0, res2.stderr[-3000:]
    assert "0 to run" in res2.stderr

    # the plot command (bandwidth.py --plot-only DIR calls this) redraws from the JSONs alone
    from benchmarks.harness import report

    (out / "rd_psnr_y.png").unlink()
    report.build(out)
    assert (out / "rd_psnr_y.png").is_file()
