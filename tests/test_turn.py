"""A call through a real TURN relay (coturn) between two network namespaces that cannot reach each other.

    fvsend (10.77.1.2) --veth-- fvrelay (10.77.1.1 | 10.77.2.1) --veth-- fvrecv (10.77.2.2)

The relay namespace does not forward IP, so the only way between the peers is coturn (media)
and a TCP forwarder for signaling, both in fvrelay. Both peers run `fvcall` with
`--ice-transport-policy relay` and their TURN credentials in `--ice-server turn:...`. The
test prints the relayed call's latency and wire figures next to the same call on loopback
(no relay), which is what the relay adds. Needs root, iproute2 and coturn's turnserver
(.ci/run installs it); skips with the reason otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from callrig import delete, first_failure, sh, two_process_call
from conftest import clip_path

RELAY, SEND, RECV = "fvrelay", "fvsend", "fvrecv"
RELAY_S, SEND_ADDR, RELAY_V, RECV_ADDR = "10.77.1.1", "10.77.1.2", "10.77.2.1", "10.77.2.2"
TURN_PORT, SIGNAL_PORT = 3478, 8790
USER, PASSWORD = "fvcall", "relay-test-secret"
FRAMES = 75
CALL_TIMEOUT_S = 240  # two processes starting torch and MediaPipe on a loaded 2-core machine
# The signaling forwarder in the relay namespace: relay:8790 (sender side) -> receiver:8790.
FORWARDER = f"""
import asyncio
async def pipe(r, w):
    try:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
    finally:
        w.close()
async def handle(r, w):
    ur, uw = await asyncio.open_connection("{RECV_ADDR}", {SIGNAL_PORT})
    await asyncio.gather(pipe(r, uw), pipe(ur, w), return_exceptions=True)
async def main():
    server = await asyncio.start_server(handle, "{RELAY_S}", {SIGNAL_PORT})
    print("forwarding", flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


def _teardown() -> None:
    delete([RELAY, SEND, RECV])


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    if shutil.which("turnserver") is None:
        return "coturn is not installed (apt-get install coturn; .ci/run does it where it can)"
    return None


def _build() -> str | None:
    """The three namespaces; the reason when this host cannot make them."""
    _teardown()
    steps = [("ip", "netns", "add", ns) for ns in (RELAY, SEND, RECV)] + [
        ("ip", "link", "add", "fvr-s", "netns", RELAY, "type", "veth", "peer", "name", "fvs-r", "netns", SEND),
        ("ip", "link", "add", "fvr-v", "netns", RELAY, "type", "veth", "peer", "name", "fvv-r", "netns", RECV),
    ]
    failed = first_failure(steps)
    if failed is not None:
        return f"`{failed[0]}` failed: {failed[1]}"
    for ns, dev, addr in [
        (RELAY, "fvr-s", RELAY_S),
        (RELAY, "fvr-v", RELAY_V),
        (SEND, "fvs-r", SEND_ADDR),
        (RECV, "fvv-r", RECV_ADDR),
    ]:
        failed = first_failure([("ip", "addr", "add", f"{addr}/24", "dev", dev), ("ip", "link", "set", dev, "up")], ns)
        if failed is not None:
            return f"`{failed[0]}` in {ns} failed: {failed[1]}"
        sh("ip", "link", "set", "lo", "up", ns=ns)
    sh("sysctl", "-qw", "net.ipv4.ip_forward=0", ns=RELAY)  # the relay namespace is no router
    return None


@pytest.fixture
def namespaces() -> Iterator[None]:
    reason = _unavailable() or _build()
    if reason:
        _teardown()
        pytest.skip(f"TURN relay test skipped: {reason}")
    try:
        yield
    finally:
        _teardown()


def _call(
    tmp: Path,
    clip: Path,
    recv_ns: str | None,
    send_ns: str | None,
    listen: str,
    peer: str,
    recv_ice: list[str],
    send_ice: list[str],
) -> tuple[dict, dict]:
    call = two_process_call(
        tmp,
        clip,
        listen=listen,
        peer=peer,
        frames=FRAMES,
        timeout_s=CALL_TIMEOUT_S,
        recv_args=["--quiet", *recv_ice],
        send_args=["--quiet", "--connect-timeout", str(CALL_TIMEOUT_S / 2), *send_ice],
        recv_ns=recv_ns,
        send_ns=send_ns,
    )
    assert call.recv.returncode == 0, call.recv.stdout
    return call.sent, call.got


def _no_route() -> bool:
    """The sender's namespace cannot reach the receiver's (the premise of the test)."""
    res = sh("python3", "-c", f"import socket; socket.create_connection(('{RECV_ADDR}', 9), timeout=1)", ns=SEND)
    return res.returncode != 0 and ("unreachable" in res.stderr.lower() or "timed out" in res.stderr.lower())


def test_call_through_a_turn_relay_between_namespaces_with_no_route(namespaces: None, tmp_path: Path) -> None:
    clip = clip_path("DPE/s.mp4")
    assert _no_route(), "the sender's namespace can reach the receiver's: the test would prove nothing"
    log = tmp_path / "turn.log"
    turn = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            RELAY,
            "turnserver",
            "-n",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--lt-cred-mech",
            f"--user={USER}:{PASSWORD}",
            "--realm=fvcall.test",
            f"--listening-ip={RELAY_S}",
            f"--listening-ip={RELAY_V}",
            f"--relay-ip={RELAY_S}",
            f"--relay-ip={RELAY_V}",
            f"--listening-port={TURN_PORT}",
            "--min-port=49200",
            "--max-port=49400",
            f"--log-file={log}",
            "--simple-log",
            f"--pidfile={tmp_path / 'turn.pid'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    forward = subprocess.Popen(
        ["ip", "netns", "exec", RELAY, sys.executable, "-c", FORWARDER],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert forward.stdout is not None and forward.stdout.readline().strip() == "forwarding"
        time.sleep(0.5)  # turnserver binds its sockets
        assert turn.poll() is None, log.read_text() if log.exists() else "turnserver exited"
        relay_args = ["--ice-transport-policy", "relay"]
        t0 = time.monotonic()
        sent, got = _call(
            tmp_path,
            clip,
            RECV,
            SEND,
            f"{RECV_ADDR}:{SIGNAL_PORT}",
            f"{RELAY_S}:{SIGNAL_PORT}",
            [f"--ice-server=turn:{USER}:{PASSWORD}@{RELAY_V}:{TURN_PORT}", *relay_args],
            [f"--ice-server=turn:{USER}:{PASSWORD}@{RELAY_S}:{TURN_PORT}", *relay_args],
        )
        relayed_s = time.monotonic() - t0
    finally:
        forward.kill()
        turn.terminate()
        try:
            turn.wait(5)
        except subprocess.TimeoutExpired:
            turn.kill()
    direct_dir = tmp_path / "direct"
    direct_dir.mkdir()
    port = 8791
    d_sent, d_got = _call(direct_dir, clip, None, None, f"127.0.0.1:{port}", f"127.0.0.1:{port}", [], [])

    assert sent["ice_routes"][0].startswith("relay ") and got["ice_route"].startswith("relay "), (sent, got)
    assert got["ended"] == "bye" and got["keyframes"] >= 1 and got["bad_packets"] == 0
    assert got["frames_rendered"] >= 0.3 * sent["frames_sent"]

    def per_packet(s: dict) -> float:
        return s["wire_tx_bytes"] / max(1, s["wire_tx_packets"])

    # Same clip, same frames: totals compare directly (rates would also compare call durations).
    extra = sent["wire_tx_bytes"] / max(1, d_sent["wire_tx_bytes"]) - 1
    print(
        f"\nTURN relay call ({relayed_s:.1f} s, {FRAMES} frames of DPE/s.mp4): route {got['ice_route']}\n"
        f"  latency p50 {got['latency_ms_p50']:.1f} ms relayed vs {d_got['latency_ms_p50']:.1f} ms on loopback "
        f"(added {got['latency_ms_p50'] - d_got['latency_ms_p50']:+.1f} ms)\n"
        f"  sender upstream: {sent['wire_tx_bytes']} B in {sent['wire_tx_packets']} packets relayed "
        f"({per_packet(sent):.1f} B/packet) vs {d_sent['wire_tx_bytes']} B in {d_sent['wire_tx_packets']} "
        f"direct ({per_packet(d_sent):.1f} B/packet): {extra:+.1%}, {per_packet(sent) - per_packet(d_sent):+.1f} "
        f"B/packet\n"
        f"  receiver: up {got['wire_tx_bytes']} B / {got['wire_tx_packets']} packets, down {got['wire_rx_bytes']} B "
        f"relayed vs up {d_got['wire_tx_bytes']} B / {d_got['wire_tx_packets']} packets, "
        f"down {d_got['wire_rx_bytes']} B"
    )
