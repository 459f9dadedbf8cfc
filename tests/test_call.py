"""Real calls: `fvcall send` and `fvcall recv` as separate processes over loopback WebRTC."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import av
import pytest
from callrig import free_port, fvcall, two_process_call
from conftest import clip_path

CALL_TIMEOUT_S = 180
FRAMES = 100


@pytest.mark.slow
def test_two_process_call_on_a_real_clip(tmp_path: Path) -> None:
    port = free_port()
    call = two_process_call(
        tmp_path,
        clip_path("DPE/s.mp4"),
        listen=f"127.0.0.1:{port}",
        peer=f"127.0.0.1:{port}",
        frames=FRAMES,
        timeout_s=CALL_TIMEOUT_S,
        recv_args=["--out", str(tmp_path / "out.mp4")],
    )
    assert call.recv.returncode == 0, call.recv.stdout
    sent, got, send = call.sent, call.got, call.send
    assert sent["frames"] == FRAMES and sent["keyframes"] >= 1
    assert sent["frames_sent"] >= 0.95 * FRAMES
    assert got["frames"] >= 0.95 * sent["frames_sent"], got  # delivered parameter packets
    assert got["frames_rendered"] >= 0.3 * sent["frames_sent"], got  # newest-wins skips what it cannot draw in time
    assert got["keyframes"] >= 1 and got["bad_packets"] == 0
    assert sent["payload_bytes_per_frame"] < 40
    for key in ("payload_bytes", "wire_bytes", "keyframe_bytes", "duration_s", "estimate_ms_p50"):
        assert sent[key] is not None and sent[key] > 0
    for key in ("latency_ms_p50", "latency_ms_p95", "render_ms_p50", "frames_dropped"):
        assert got[key] is not None
    assert got["wire_bytes"] > got["payload_bytes"] > got["keyframe_bytes"] > 0
    with av.open(str(tmp_path / "out.mp4")) as c:
        frames = [f for f in c.decode(video=0)]
    assert len(frames) >= 0.3 * FRAMES and (frames[0].width, frames[0].height) == (256, 256)
    assert "fps" in send.stdout and "kbit/s" in send.stdout


def test_missing_camera_is_one_line_error(tmp_path: Path) -> None:
    res = subprocess.run(
        fvcall("send", "--camera", "7", "--peer", "127.0.0.1:9"), capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 1
    assert res.stderr.strip() == "fvcall: error: cannot open camera 7: no such device, or it is in use"


def test_unreadable_file_is_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"not a video at all")
    res = subprocess.run(
        fvcall("send", "--camera", str(bad), "--peer", "127.0.0.1:9"), capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fvcall: error: cannot read video {bad}")


def test_no_receiver_is_one_line_error(tmp_path: Path) -> None:
    res = subprocess.run(
        fvcall(
            "send",
            "--camera",
            str(clip_path("DPE/s.mp4")),
            "--peer",
            f"127.0.0.1:{free_port()}",
            "--connect-timeout",
            "1",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fvcall: error: cannot reach a receiver at 127.0.0.1:")


def test_window_without_display_is_one_line_error() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    res = subprocess.run(
        fvcall("recv", "--listen", f"127.0.0.1:{free_port()}"), capture_output=True, text=True, timeout=60, env=env
    )
    assert res.returncode == 1
    assert res.stderr.strip() == "fvcall: error: no display to open a window on: use --no-window (and --out FILE.mp4)"


@pytest.mark.slow
def test_demo_writes_side_by_side_and_prints_rates(tmp_path: Path) -> None:
    out = tmp_path / "demo.mp4"
    res = subprocess.run(
        fvcall("demo", "--no-window", "--quiet", "--seconds", "3", "--out", str(out)),
        capture_output=True,
        text=True,
        timeout=CALL_TIMEOUT_S,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    line = [s for s in res.stdout.splitlines() if s.startswith("demo:")]
    assert line and "kbit/s" in line[0] and "PSNR" in line[0] and " references, " in line[0]
    with av.open(str(out)) as c:
        f = next(c.decode(video=0))
    assert (f.width, f.height) == (512, 256)  # input | output
