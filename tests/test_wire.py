"""Wire format: golden bytes, round trips, and exact errors for hostile input."""

from __future__ import annotations

from pathlib import Path

import msgpack
import numpy as np
import pytest

from codec import wire

GOLDEN = Path(__file__).parent / "golden"

MESSAGES: dict[str, wire.Message] = {
    "header": wire.Header("mesh", 256, 25.0, 11, [0.5, 1 / 512, 0.004, 1 / 512], "", 1700000000000),
    "keyframe_chunk": wire.KeyframeChunk(3, 0, 2, bytes(range(32))),
    "params": wire.Params(
        513,
        123456,
        3,
        wire.Flags.NONE,
        np.array([1, -2, 3, -4, 5, -6, 7, -8, 9, -10, 11, -12, 13, -14, 15, -16, 17], np.int8),
    ),
    "params_no_face": wire.Params(65535, 4294967295, 255, wire.Flags.NO_FACE, np.zeros(0, np.int8)),
    "control_keyframe_request": wire.ControlMessage(wire.Control.KEYFRAME_REQUEST, -1),
}


def _same(a: wire.Message, b: wire.Message) -> bool:
    if isinstance(a, wire.Params) and isinstance(b, wire.Params):
        return (a.seq, a.capture_ms, a.kf_id, a.flags) == (b.seq, b.capture_ms, b.kf_id, b.flags) and np.array_equal(
            a.values, b.values
        )
    return a == b


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_golden_bytes(name: str) -> None:
    golden = (GOLDEN / f"{name}_v1.bin").read_bytes()
    assert wire.encode(MESSAGES[name]) == golden
    assert _same(wire.decode(golden), MESSAGES[name])


def test_params_packet_is_small() -> None:
    # 17 int8 values (6 pose + 11 expression), seq and a capture time past 65 s.
    assert len((GOLDEN / "params_v1.bin").read_bytes()) == 31


def test_keyframe_split_and_reassemble_out_of_order() -> None:
    payload = bytes(np.random.default_rng(0).integers(0, 256, 40000, dtype=np.uint8))
    chunks = wire.split_keyframe(7, payload)
    assert len(chunks) == 3
    asm = wire.KeyframeAssembler()
    decoded = [wire.decode(wire.encode(c)) for c in reversed(chunks)]
    assert [asm.add(c) for c in decoded[:-1]] == [None, None]
    assert asm.add(decoded[-1]) == payload


def test_newer_keyframe_replaces_half_received_one() -> None:
    asm = wire.KeyframeAssembler()
    old = wire.split_keyframe(1, b"a" * 20000)
    new = wire.split_keyframe(2, b"b" * 100)
    assert asm.add(old[0]) is None
    assert asm.add(new[0]) == b"b" * 100
    assert asm.add(old[1]) is None  # the stale keyframe never completes


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "malformed packet: empty"),
        (b"\xc1\x00garbage", "malformed packet: not msgpack (FormatError)"),
        ((GOLDEN / "params_v1.bin").read_bytes()[:-3], "malformed packet: not msgpack (ValueError)"),
        (b"\x00" * (wire.MAX_MESSAGE_BYTES + 1), f"packet too large: {wire.MAX_MESSAGE_BYTES + 1} bytes (limit 16448)"),
        (msgpack.packb([(2 << 4) | 3, 0, 0, 0, 0, b""]), "unsupported packet version 2 (this build speaks 1)"),
        (msgpack.packb([(1 << 4) | 9]), "malformed packet: unknown kind 9"),
        (msgpack.packb({"a": 1}), "malformed packet: no type tag"),
        (msgpack.packb([0x13, 70000, 0, 0, 0, b""]), "malformed packet: seq out of range"),
        (msgpack.packb([0x13, 1, 0, 0, 8, b""]), "malformed packet: flags out of range"),
        (msgpack.packb([0x13, 1, 0, 0, 0, b"x" * 200]), "malformed packet: params values"),
        (msgpack.packb([0x13, 1, 0, 0]), "malformed packet: params needs 6 fields"),
        (msgpack.packb([0x12, 0, 5, 5, b""]), "malformed packet: chunk index out of range"),
        (msgpack.packb([0x12, 0, 0, 1000, b""]), "malformed packet: chunk count out of range"),
        (msgpack.packb([0x14, 99, 0]), "malformed packet: control code out of range"),
        (
            msgpack.packb([0x11, {"profile": "../x", "size": 256, "fps": 25.0, "n_expr": 11, "steps": [1, 1, 1, 1]}]),
            "malformed header: profile",
        ),
        (
            msgpack.packb([0x11, {"profile": "mesh", "size": 256, "fps": 25.0, "n_expr": 11, "steps": [1, 1, -1, 1]}]),
            "malformed header: steps",
        ),
        (msgpack.packb([0x13, True, 0, 0, 0, b""]), "malformed packet: seq out of range"),
    ],
)
def test_rejects_with_exact_message(data: bytes, message: str) -> None:
    with pytest.raises(wire.WireError) as err:
        wire.decode(data)
    assert str(err.value) == message


def test_oversized_params_rejected_even_under_message_limit() -> None:
    data = (
        msgpack.packb(
            [
                0x13,
                1,
                0,
                0,
                0,
                b"\x00" * 100,
            ]
        )
        + b""
    )
    big = msgpack.packb([0x13, 1, 0, 0, 0, b"\x00" * 300])
    assert isinstance(wire.decode(data), wire.Params)
    with pytest.raises(wire.WireError, match=r"^packet too large: \d+ bytes \(limit 256\)$"):
        wire.decode(big)


def test_random_garbage_never_escapes_as_another_exception() -> None:
    rng = np.random.default_rng(1)
    seeds = [wire.encode(m) for m in MESSAGES.values()]
    for i in range(3000):
        base = bytearray(seeds[i % len(seeds)])
        for _ in range(int(rng.integers(1, 4))):
            base[int(rng.integers(0, len(base)))] = int(rng.integers(0, 256))
        try:
            wire.decode(bytes(base[: int(rng.integers(1, len(base) + 1))]))
        except wire.WireError:
            pass


def test_is_header_peek() -> None:
    assert wire.is_header((GOLDEN / "header_v1.bin").read_bytes())
    assert not any(wire.is_header((GOLDEN / f"{n}_v1.bin").read_bytes()) for n in MESSAGES if n != "header")
    assert not wire.is_header(b"") and not wire.is_header(b"\x92")
