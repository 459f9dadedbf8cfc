"""Wire format: golden bytes, round trips, and exact errors for hostile input."""

from __future__ import annotations

from pathlib import Path

import msgpack
import numpy as np
import pytest

from codec import entropy, wire
from codec.params import QuantSpec

GOLDEN = Path(__file__).parent / "golden"
N_EXPR = 11
CODER = entropy.Coder(entropy.generic(N_EXPR), QuantSpec(), 25.0)
# this version's tags of the msgpack kinds
HEADER, KEYFRAME, CONTROL, REFERENCE = (
    wire.type_tag(k) for k in (wire.Kind.HEADER, wire.Kind.KEYFRAME, wire.Kind.CONTROL, wire.Kind.REFERENCE)
)
VALUES = np.array([1, -2, 3, -4, 5, -6, 7, -8, 9, -10, 11, -12, 13, -14, 15, -16, 17])

MESSAGES: dict[str, wire.Message] = {
    "header": wire.Header(
        "mesh",
        256,
        25.0,
        N_EXPR,
        [0.5, 1 / 512, 0.004, 1 / 512],
        "",
        1700000000000,
        123456,
        entropy.generic(N_EXPR).to_bytes(),
    ),
    "keyframe_chunk": wire.KeyframeChunk(3, 0, 2, bytes(range(32))),
    "params": wire.Params(123456, 3, wire.Flags.NONE, (VALUES,), (0,)),
    "params_two_frames": wire.Params(123456, 19, wire.Flags.NONE, (VALUES, VALUES + 1), (0, 40)),
    "params_no_face": wire.Params(65535, 255, wire.Flags.NO_FACE),
    "control_keyframe_request": wire.ControlMessage(wire.Control.KEYFRAME_REQUEST, -1),
    "params_references": wire.Params(123456, 3, wire.Flags.NONE, (VALUES, VALUES + 1), (0, 40), ((1, 2), (0, 2))),
    "reference": wire.Reference(3, 1, 2, bytes(range(16))),
}


def _golden(name: str) -> bytes:
    """This version's bytes of MESSAGES[name]; PARAMS carry no version (their tag is 0x40-0x7F), so
    their v2 bytes are v4's."""
    return (GOLDEN / f"{name}_{'v2' if name.startswith('params') else 'v4'}.bin").read_bytes()


def _same(a: wire.Message, b: wire.Message) -> bool:
    if isinstance(a, wire.Params) and isinstance(b, wire.Params):
        offsets = a.offsets_ms or (0,) * len(a.frames)
        return (
            (a.capture_ms % 65536, a.kf_id % 16, a.flags) == (b.capture_ms, b.kf_id, b.flags)
            and len(a.frames) == len(b.frames)
            and all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames, strict=True))
            and (not a.frames or tuple(offsets) == tuple(b.offsets_ms))
            and all(a.frame_refs(i) == b.frame_refs(i) for i in range(len(a.frames)))
        )
    return a == b


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_golden_bytes(name: str) -> None:
    golden = _golden(name)
    assert wire.encode(MESSAGES[name], CODER) == golden
    assert _same(MESSAGES[name], wire.decode(golden, CODER))


def test_params_packet_is_small() -> None:
    # 17 large values (6 pose + 11 expression, up to 17 steps) under the generic model: v1 took 31 bytes.
    assert len(_golden("params")) < len((GOLDEN / "params_v1.bin").read_bytes()) * 0.6
    assert len(_golden("params_no_face")) == 3


def test_params_without_coder_keep_their_body() -> None:
    msg = wire.decode(_golden("params"))
    assert isinstance(msg, wire.Params) and msg.frames == () and msg.body


@pytest.mark.parametrize(
    ("version", "names"),
    [
        (1, ("header", "params", "keyframe_chunk", "control_keyframe_request")),
        (2, ("header", "keyframe_chunk", "control_keyframe_request", "reference")),
        (3, ("header", "keyframe_chunk", "control_keyframe_request", "reference")),
    ],
)
def test_past_version_peer_gets_one_line_refusal(version: int, names: tuple[str, ...]) -> None:
    for name in names:
        with pytest.raises(wire.WireVersionError) as err:
            wire.decode((GOLDEN / f"{name}_v{version}.bin").read_bytes())
        assert str(err.value) == (
            f"the peer speaks fvcall wire format v{version}, this build speaks v4: run the same fvcall on both ends"
        )
        assert err.value.version == version


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
        (_golden("header")[:-3], "malformed packet: not msgpack (ValueError)"),
        (b"\x00" * (wire.MAX_MESSAGE_BYTES + 1), f"packet too large: {wire.MAX_MESSAGE_BYTES + 1} bytes (limit 16448)"),
        (msgpack.packb([(5 << 4) | 4, 0, 0]), "unsupported packet version 5 (this build speaks 4)"),
        (msgpack.packb([(4 << 4) | 9]), "malformed packet: unknown kind 9"),
        (msgpack.packb({"a": 1}), "malformed packet: no type tag"),
        (b"\x40", "malformed packet: params truncated"),
        (b"\x41\x00\x00\x00", "malformed packet: params references"),
        (b"\x41\x00\x00\x02\x12", "malformed packet: params references"),
        (b"\x41\x00\x00\x01\x12", "malformed packet: params without values"),
        (b"\x43\x00\x00", "malformed packet: no-face params name references"),
        (msgpack.packb([REFERENCE, 0, 0, 1, b""]), "malformed packet: reference slot out of range"),
        (msgpack.packb([REFERENCE, 0, 16, 1, b""]), "malformed packet: reference slot out of range"),
        (msgpack.packb([REFERENCE, 0, 1, 0, b""]), "malformed packet: reference regions out of range"),
        (msgpack.packb([REFERENCE, 0, 1, 4, b""]), "malformed packet: reference regions out of range"),
        (msgpack.packb([REFERENCE, 0, 1, 1, "x"]), "malformed packet: reference picture"),
        (msgpack.packb([REFERENCE, 0, 1, 1]), "malformed packet: reference needs 5 fields"),
        (b"\x42\x00\x00\x01", "malformed packet: no-face params carry values"),
        (b"\x40\x00\x00", "malformed packet: params without values"),
        (b"\x40" + b"\x00" * 600, "packet too large: 601 bytes (limit 512)"),
        (msgpack.packb([KEYFRAME, 0, 5, 5, b""]), "malformed packet: chunk index out of range"),
        (msgpack.packb([KEYFRAME, 0, 0, 1000, b""]), "malformed packet: chunk count out of range"),
        (msgpack.packb([CONTROL, 99, 0]), "malformed packet: control code out of range"),
        (
            msgpack.packb([HEADER, {"profile": "../x", "size": 256, "fps": 25.0, "n_expr": 11, "steps": [1, 1, 1, 1]}]),
            "malformed header: profile",
        ),
        (
            msgpack.packb(
                [HEADER, {"profile": "mesh", "size": 256, "fps": 25.0, "n_expr": 11, "steps": [1, 1, -1, 1]}]
            ),
            "malformed header: steps",
        ),
        (
            msgpack.packb(
                [
                    HEADER,
                    {"profile": "mesh", "size": 256, "fps": 25.0, "n_expr": 1, "steps": [1, 1, 1, 1], "entropy": 3},
                ]
            ),
            "malformed header: entropy model",
        ),
    ],
)
def test_rejects_with_exact_message(data: bytes, message: str) -> None:
    with pytest.raises(wire.WireError) as err:
        wire.decode(data, CODER)
    assert str(err.value) == message


def test_random_garbage_never_escapes_as_another_exception() -> None:
    rng = np.random.default_rng(1)
    seeds = [wire.encode(m, CODER) for m in MESSAGES.values()]
    for i in range(3000):
        base = bytearray(seeds[i % len(seeds)])
        for _ in range(int(rng.integers(1, 4))):
            base[int(rng.integers(0, len(base)))] = int(rng.integers(0, 256))
        try:
            wire.decode(bytes(base[: int(rng.integers(1, len(base) + 1))]), CODER)
        except wire.WireError:
            pass


def test_is_header_peek() -> None:
    assert wire.is_header(_golden("header"))
    for old in ("header_v1.bin", "header_v2.bin"):  # reach the decoder, which refuses them
        assert wire.is_header((GOLDEN / old).read_bytes())
    assert not any(wire.is_header(_golden(n)) for n in MESSAGES if n != "header")
    assert not wire.is_header(b"") and not wire.is_header(b"\x92")


@pytest.mark.parametrize("version", [1, 2])
def test_past_version_caller_is_refused_by_the_decoder_with_a_bye_it_understands(version: int) -> None:
    from codec.decoder import FaceDecoder

    dec = FaceDecoder(renderer_factory=lambda h: None)  # never reached
    replies = dec.receive((GOLDEN / f"header_v{version}.bin").read_bytes())
    assert dec.error is not None and dec.error.startswith(f"the peer speaks fvcall wire format v{version}")
    assert all(r.reliable for r in replies)
    # that version's own BYE, byte for byte: a fixarray of 3, its CONTROL tag, BYE, 0
    assert replies[-1].data == bytes([0x93, (version << 4) | 0x04, 0x03, 0x00])
    assert replies[-1].data[:2] == (GOLDEN / f"control_keyframe_request_v{version}.bin").read_bytes()[:2]
    assert dec.header is None and dec.stats.bad_packets == 1


def test_references_section_layout() -> None:
    """Flag bit 0, a count (1: one choice for every frame), then (slot of region 0) << 4 | (slot of region 1)."""
    plain = wire.encode(wire.Params(7, 3, wire.Flags.NONE, (VALUES, VALUES), (0, 40)), CODER)
    same = wire.encode(wire.Params(7, 3, wire.Flags.NONE, (VALUES, VALUES), (0, 40), ((1, 2), (1, 2))), CODER)
    each = wire.encode(wire.Params(7, 3, wire.Flags.NONE, (VALUES, VALUES), (0, 40), ((1, 2), (0, 15))), CODER)
    assert same[0] == plain[0] | 0x01 and same[1:3] == plain[1:3]
    assert same[3:5] == b"\x01\x12" and same[5:] == plain[3:]
    assert each[3:6] == b"\x02\x12\x0f" and each[6:] == plain[3:]
    # all zeros is no section at all: a call without references sends exactly the bytes it always did
    zeros = wire.encode(wire.Params(7, 3, wire.Flags.NONE, (VALUES, VALUES), (0, 40), ((0, 0), (0, 0))), CODER)
    assert zeros == plain
    assert wire.decode(same, CODER).frame_refs(1) == (1, 2)
    assert wire.decode(plain, CODER).frame_refs(0) == (0, 0)


def test_references_for_another_number_of_frames_are_refused() -> None:
    two = wire.encode(wire.Params(7, 3, wire.Flags.NONE, (VALUES, VALUES), (0, 40), ((1, 2), (0, 15))), CODER)
    one = wire.encode(wire.Params(7, 3, wire.Flags.NONE, (VALUES,), (0,)), CODER)
    hostile = two[:6] + one[3:]  # two choices, one frame
    with pytest.raises(wire.WireError, match=r"^malformed packet: params references for another number of frames$"):
        wire.decode(hostile, CODER)


def test_reference_slots_beyond_the_wire_range_are_not_sent() -> None:
    with pytest.raises(ValueError, match="references"):
        wire.encode(wire.Params(7, 3, wire.Flags.NONE, (VALUES,), (0,), ((16, 0),)), CODER)


def test_reference_ack_argument_round_trip() -> None:
    assert wire.parse_ack(wire.ack_arg(300, 7)) == (300 % 256, 7)
    assert wire.parse_ack(wire.ack_arg(255, 15)) == (255, 15)


def test_keyframe_message_names_its_base_only_when_predicted() -> None:
    intra = wire.Keyframe(b"\x00\x00\x01\x67", b"rig")
    assert msgpack.unpackb(wire.pack_keyframe(intra)) == {"h264": intra.h264, "aux": b"rig"}  # as v3 sent it
    predicted = wire.Keyframe(b"\x00\x00\x01\x41", b"rig", base=300)
    assert wire.unpack_keyframe(wire.pack_keyframe(predicted)) == wire.Keyframe(
        predicted.h264, b"rig", 300 % wire.KF_MODULO
    )
    for base in (-1, wire.KF_MODULO, "0", True):
        bad = msgpack.packb({"h264": b"x", "aux": b"", "base": base})
        with pytest.raises(wire.WireError, match=r"^malformed keyframe: base is not a keyframe id$"):
            wire.unpack_keyframe(bad)
