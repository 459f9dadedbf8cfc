"""Every bad option is refused before a call connects, in one line; nothing is dialled or opened.

The peer address used below has nothing listening: a check that ran after connecting would
show up as a "not answering, retrying" line (and take seconds), which every case asserts away.
"""

from __future__ import annotations

import time
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import clip_path

from peer import cli

NOBODY = "127.0.0.1:9"  # discard port: nothing listens there
QUICK_S = 5.0  # a refusal that dialled would wait connect-timeout (30 s) first


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    t0 = time.monotonic()
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    took = time.monotonic() - t0
    out, err = capsys.readouterr()
    assert took < QUICK_S and "not answering" not in out + err, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return code, lines[0]


def _send(*extra: str, camera: str | None = None) -> list[str]:
    return ["send", "--camera", camera or str(clip_path("DPE/s.mp4")), "--peer", NOBODY, "--quiet", *extra]


USAGE_CASES = {
    "max frames below 0": (_send, ["--max-frames", "-1"], "argument --max-frames: -1 is out of range (0..)"),
    "max frames not a number": (_send, ["--max-frames", "x"], "argument --max-frames: expected an integer, got 'x'"),
    "quant scale 0": (_send, ["--quant-scale", "0"], "argument --quant-scale: 0 is out of range ([0.05, 20])"),
    "quant scale nan": (_send, ["--quant-scale", "nan"], "argument --quant-scale: nan is out of range ([0.05, 20])"),
    "keyframe crf": (_send, ["--keyframe-crf", "60"], "argument --keyframe-crf: 60 is out of range (0..51)"),
    "reference threshold 0": (
        _send,
        ["--reference-threshold", "0"],
        "argument --reference-threshold: 0 is out of range ((0, 40])",
    ),
    "reference threshold word": (
        _send,
        ["--reference-threshold", "never"],
        "argument --reference-threshold: expected a number, got 'never'",
    ),
    "connect timeout 0": (
        _send,
        ["--connect-timeout", "0"],
        "argument --connect-timeout: 0 is out of range ((0, 3600])",
    ),
    "peer port": (lambda *e: ["send", "--peer", "host:99999", *e], [], "argument --peer: bad port in 'host:99999'"),
    "ice server scheme": (_send, ["--ice-server", "http://x"], "argument --ice-server: bad --ice-server 'http://x'"),
    "turn without credentials": (
        _send,
        ["--ice-server", "turn:10.0.0.1:3478"],
        "argument --ice-server: bad --ice-server 'turn:10.0.0.1:3478': a TURN server needs USER:PASS@",
    ),
    "ice policy": (_send, ["--ice-transport-policy", "none"], "argument --ice-transport-policy: invalid choice"),
    "size": (_send, ["--size", "300"], "argument --size: invalid choice: 300"),
    "stats in a missing folder": (
        _send,
        ["--stats", "/nonexistent/dir/s.json"],
        "argument --stats: cannot write /nonexistent/dir/s.json: no directory /nonexistent/dir",
    ),
    "missing weights": (_send, ["--weights", "/nonexistent.safetensors"], "argument --weights: no file"),
    "recv listen port": (lambda *e: ["recv", "--listen", "0.0.0.0:x", *e], [], "argument --listen: bad port"),
    "recv out folder": (
        lambda *e: ["recv", "--out", "/nonexistent/dir/o.mp4", *e],
        [],
        "argument --out: cannot write /nonexistent/dir/o.mp4: no directory",
    ),
    "recv yaw": (lambda *e: ["recv", "--yaw", "inf", *e], [], "argument --yaw: inf is out of range"),
}


@pytest.mark.parametrize("case", list(USAGE_CASES))
def test_bad_option_is_one_line_before_connecting(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    build, extra, expect = USAGE_CASES[case]
    code, line = _fails(build(*extra), capsys)
    assert code == cli.EXIT_USAGE
    assert line.startswith(f"fvcall {build()[0]}: error: {expect}"), line


def _video(path: Path, width: int, height: int, frames: int = 2) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        for _ in range(frames):
            for p in s.encode(av.VideoFrame.from_ndarray(np.zeros((height, width, 3), np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def test_bad_sources_are_refused_before_connecting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 100)
    huge = _video(tmp_path / "huge.mp4", 4224, 16)
    cases = {
        str(empty): f"fvcall: error: cannot read video {empty}: empty file",
        str(text): f"fvcall: error: cannot read video {text}: not a video, or a damaged one (invalid data)",
        str(huge): f"fvcall: error: video {huge} is 4224x16, above 4096",
        str(tmp_path / "missing.mp4"): f"fvcall: error: no camera or video file named '{tmp_path / 'missing.mp4'}'",
    }
    for camera, expect in cases.items():
        code, line = _fails(_send(camera=camera), capsys)
        assert (code, line) == (cli.EXIT_ERROR, expect)


def test_relay_policy_needs_a_turn_server(capsys: pytest.CaptureFixture[str]) -> None:
    code, line = _fails(_send("--ice-transport-policy", "relay"), capsys)
    assert (code, line) == (
        cli.EXIT_ERROR,
        "fvcall: error: --ice-transport-policy relay needs a TURN server: --ice-server turn:USER:PASS@HOST:PORT",
    )


@pytest.mark.parametrize(("text", "value"), [("off", None), ("OFF", None), ("2.5", 2.5), ("40", 40.0)])
def test_reference_threshold_values(text: str, value: float | None) -> None:
    args = cli.build_parser().parse_args(["send", "--peer", NOBODY, "--reference-threshold", text])
    assert args.reference_threshold == value
