"""Shared by the end-to-end call tests: the `fvcall` command, a free port, one call between an
`fvcall recv` and an `fvcall send` process, and `ip netns` commands with their clean-up."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

RECV_EXIT_S = 30  # after the sender hangs up, `recv --once` finishes its recording and stats
SH_TIMEOUT_S = 30
RECV_STATS, SEND_STATS = "recv.json", "send.json"


def fvcall(*args: str) -> list[str]:
    """The installed `fvcall` command beside this interpreter, else the module."""
    exe = Path(sys.executable).with_name("fvcall")
    return [str(exe), *args] if exe.exists() else [sys.executable, "-m", "peer.cli", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_ns(ns: str | None, cmd: Sequence[str]) -> list[str]:
    """cmd run inside network namespace ns (None: where this process is)."""
    return (["ip", "netns", "exec", ns] if ns else []) + list(cmd)


def sh(*cmd: str, ns: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(in_ns(ns, cmd), capture_output=True, text=True, timeout=SH_TIMEOUT_S)


def first_failure(steps: Iterable[Sequence[str]], ns: str | None = None) -> tuple[str, str] | None:
    """Runs steps in order up to the first that fails: (its command line, its stderr); None when all ran."""
    for step in steps:
        res = sh(*step, ns=ns)
        if res.returncode != 0:
            return " ".join(step), res.stderr.strip()
    return None


def delete(namespaces: Iterable[str], links: Iterable[str] = ()) -> None:
    """Removes links and namespaces (what is not there is skipped silently)."""
    for link in links:
        sh("ip", "link", "del", link)
    for ns in namespaces:
        sh("ip", "netns", "del", ns)


@dataclass(frozen=True)
class CallResult:
    """One finished two-process call."""

    send: subprocess.CompletedProcess
    """The sender process (stdout, stderr apart)."""
    recv: subprocess.CompletedProcess
    """The receiver process (stderr merged into stdout)."""
    stats_dir: Path
    """Where both sides wrote their --stats summaries."""

    @property
    def sent(self) -> dict:
        """The sender's summary."""
        return json.loads((self.stats_dir / SEND_STATS).read_text())

    @property
    def got(self) -> dict:
        """The receiver's summary (read on use: a receiver that failed may have written none)."""
        return json.loads((self.stats_dir / RECV_STATS).read_text())


def two_process_call(
    tmp: Path,
    clip: Path,
    *,
    listen: str,
    peer: str,
    frames: int,
    timeout_s: float,
    recv_args: Sequence[str] = (),
    send_args: Sequence[str] = (),
    recv_ns: str | None = None,
    send_ns: str | None = None,
) -> CallResult:
    """`fvcall recv --once` listening on listen, then `fvcall send` of frames of clip to peer; the
    sender must succeed within timeout_s. Stats go to tmp/recv.json and tmp/send.json."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    recv_cmd = fvcall("recv", "--listen", listen, "--once", "--no-window", *recv_args, "--stats", str(tmp / RECV_STATS))
    recv = subprocess.Popen(
        in_ns(recv_ns, recv_cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        send_cmd = fvcall("send", "--camera", str(clip), "--peer", peer, "--max-frames", str(frames), *send_args)
        send_cmd += ["--stats", str(tmp / SEND_STATS)]
        send = subprocess.run(in_ns(send_ns, send_cmd), capture_output=True, text=True, timeout=timeout_s, env=env)
        recv_out, _ = recv.communicate(timeout=RECV_EXIT_S)
    finally:
        recv.kill()
    assert send.returncode == 0, send.stdout + send.stderr
    return CallResult(send, subprocess.CompletedProcess(recv.args, recv.returncode, recv_out), tmp)
