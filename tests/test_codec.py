"""Encoder and decoder together, in memory: real faces, no-face stretches, loss, reordering."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import read_frames

from codec import driver, entropy, keyframe, wire
from codec.decoder import FaceDecoder
from codec.encoder import FaceEncoder
from codec.metrics import psnr
from codec.params import FrameParams, QuantSpec, dequantize
from models.mesh import landmarks, shape

SIZE = 64


class RecordingRenderer:
    """Stands in for a profile renderer: remembers what it was asked to draw."""

    def __init__(self) -> None:
        self.keyframes: list[bytes] = []
        self.rendered: list[FrameParams] = []

    def set_keyframe(self, image: np.ndarray, aux: bytes) -> None:
        if aux == b"bad":
            raise ValueError("bad aux")
        self.keyframes.append(aux)

    def render(self, params: FrameParams) -> np.ndarray:
        self.rendered.append(params)
        return np.full((SIZE, SIZE, 3), len(self.rendered) % 256, np.uint8)


class RigRenderer(RecordingRenderer):
    """Reads the keyframe rig the way the mesh renderer does."""

    def set_keyframe(self, image: np.ndarray, aux: bytes) -> None:
        landmarks.decode(aux, SIZE)
        self.keyframes.append(aux)


def _session(
    n_expr: int = 2, aux: bytes = b"aux", renderer: RecordingRenderer | None = None
) -> tuple[FaceDecoder, RecordingRenderer, list[bytes]]:
    renderer = renderer or RecordingRenderer()
    dec = FaceDecoder(renderer_factory=lambda h: renderer)
    img = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    kf = wire.pack_keyframe(wire.Keyframe(keyframe.encode(img), aux))
    msgs = [wire.encode(wire.Header("mesh", SIZE, 25.0, n_expr, QuantSpec().to_list(), time_ms=TIME0))]
    msgs += [wire.encode(c) for c in wire.split_keyframe(0, kf)]
    return dec, renderer, msgs


TIME0 = 65_400  # ms: capture times cross the 16-bit wrap of PARAMS (65 536 ms) a few frames in


def _params(seq: int, kf: int = 0, n: int = 8, flags: wire.Flags = wire.Flags.NONE) -> bytes:
    """Frame `seq` (capture time TIME0 + 40 seq), values all seq % 100, generic model."""
    coder = entropy.Coder(entropy.generic(n - 6), QuantSpec(), 25.0)
    frames = (np.full(n, seq % 100),) if flags == wire.Flags.NONE else ()
    return wire.encode(wire.Params(TIME0 + seq * 40, kf, flags, frames), coder)


def test_keyframe_is_acknowledged_and_params_render() -> None:
    dec, renderer, msgs = _session()
    replies = [r for m in msgs for r in dec.receive(m)]
    assert [wire.decode(r.data) for r in replies] == [wire.ControlMessage(wire.Control.KEYFRAME_ACK, 0)]
    dec.receive(_params(1))
    assert dec.render() is not None and renderer.keyframes == [b"aux"] and len(renderer.rendered) == 1
    expected = dequantize(np.full(8, 1, np.int8), QuantSpec())  # the header has no model: generic
    assert np.allclose(renderer.rendered[0].vector(), expected.vector())


def test_params_for_unknown_keyframe_ask_for_one_rate_limited() -> None:
    now = [100.0]
    dec, _, msgs = _session()
    dec._clock = lambda: now[0]
    dec.receive(msgs[0])  # header only: the keyframe is lost
    now[0] += 1.0
    first = dec.receive(_params(1))
    assert [wire.decode(r.data) for r in first] == [wire.ControlMessage(wire.Control.KEYFRAME_REQUEST, -1)]
    assert dec.receive(_params(2)) == []  # within the request interval
    now[0] += 0.6
    assert len(dec.receive(_params(3))) == 1
    assert dec.render() is None  # nothing to show, and no garbage either


def test_newest_wins_and_stale_or_duplicate_are_dropped() -> None:
    dec, renderer, msgs = _session()
    for m in msgs:
        dec.receive(m)
    for seq in (5, 3, 5, 7, 6):  # 3, the second 5 and 6 arrive late
        dec.receive(_params(seq))
    dec.render()
    assert dec.stats.stale == 3 and dec.stats.superseded == 1
    assert len(renderer.rendered) == 1 and renderer.rendered[0].yaw == pytest.approx(7 * 0.5)
    assert dec.stats.expected == 5  # frames 3..7 by capture time


def test_capture_time_wraps() -> None:
    dec, renderer, msgs = _session()
    for m in msgs:
        dec.receive(m)
    for seq in range(0, 8):  # 65 400 .. 65 680 ms: the 16-bit field wraps after the 4th
        dec.receive(_params(seq))
        dec.render()
        assert dec.latest_capture_ms == TIME0 + 40 * seq
    assert len(renderer.rendered) == 8 and dec.stats.stale == 0


def test_frames_of_one_message_play_out_one_period_apart() -> None:
    now = [10.0]
    dec, renderer, msgs = _session()
    dec._clock = lambda: now[0]
    for m in msgs:
        dec.receive(m)
    coder = entropy.Coder(entropy.generic(2), QuantSpec(), 25.0)
    two = [np.full(8, 1), np.full(8, 2)]
    dec.receive(wire.encode(wire.Params(TIME0, 0, wire.Flags.NONE, tuple(two), (0, 40)), coder))
    assert dec.pending() and dec.render() is not None and renderer.rendered[-1].yaw == pytest.approx(0.5)
    assert not dec.pending() and dec.next_due() == pytest.approx(0.04)
    now[0] += 0.04
    assert dec.pending() and dec.latest_capture_ms == TIME0 + 40
    dec.render()
    assert renderer.rendered[-1].yaw == pytest.approx(1.0) and dec.next_due() is None
    # A newer message that arrives before the second frame is due supersedes it.
    dec.receive(wire.encode(wire.Params(TIME0 + 80, 0, wire.Flags.NONE, tuple(two), (0, 40)), coder))
    dec.render()
    now[0] += 0.02
    dec.receive(wire.encode(wire.Params(TIME0 + 160, 0, wire.Flags.NONE, (np.full(8, 5),)), coder))
    dec.render()
    assert renderer.rendered[-1].yaw == pytest.approx(2.5) and dec.stats.superseded == 1
    now[0] += 1.0
    assert not dec.pending()  # the superseded frame never shows later


def test_no_face_holds_and_dims_the_last_frame() -> None:
    now = [0.0]
    dec, _, msgs = _session()
    dec._clock = lambda: now[0]
    for m in msgs:
        dec.receive(m)
    dec.receive(_params(1))
    shown = dec.render()
    assert shown is not None
    dec.receive(_params(2, flags=wire.Flags.NO_FACE))
    now[0] += 5.0
    dec.receive(_params(3, flags=wire.Flags.NO_FACE))
    dimmed = dec.render()
    assert dimmed is not None and dimmed.mean() == pytest.approx(shown.mean() * 0.6, abs=1)


def test_wrong_value_count_and_garbage_never_raise() -> None:
    dec, renderer, msgs = _session()
    for m in msgs:
        dec.receive(m)
    dec.receive(_params(1, n=3))
    rng = np.random.default_rng(2)
    for _ in range(2000):
        dec.receive(bytes(rng.integers(0, 256, int(rng.integers(0, 80)), dtype=np.uint8)))
    assert dec.stats.bad_packets >= 1 and dec.stats.last_error
    assert renderer.rendered == []


def test_corrupt_keyframe_is_rejected_and_requested_again() -> None:
    dec, _, msgs = _session()
    dec.receive(msgs[0])
    bad = wire.pack_keyframe(wire.Keyframe(b"\x00\x00\x00\x01garbage"))
    replies = [r for c in wire.split_keyframe(0, bad) for r in dec.receive(wire.encode(c))]
    assert [wire.decode(r.data).code for r in replies] == [wire.Control.KEYFRAME_REQUEST]
    assert dec.stats.bad_packets == 1 and "keyframe does not decode" in dec.stats.last_error


def _rig(model: shape.ShapeModel) -> bytes:
    """Keyframe rig data of the mean face, coded with `model`."""
    mine = shape.shipped()
    assert mine is not None
    return shape.encode(mine.mean * SIZE, SIZE, model)


def _rig_session(aux: bytes) -> tuple[FaceDecoder, list[float]]:
    """A session whose keyframe carries rig data `aux`, on a fake clock; header and keyframe received."""
    dec, _, msgs = _session(aux=aux, renderer=RigRenderer())
    now = [100.0]
    dec._clock = lambda: now[0]
    replies = [r for m in msgs for r in dec.receive(m)]
    assert [wire.decode(r.data).code for r in replies] == [wire.Control.KEYFRAME_ACK]
    return dec, now


def _codes(packets: list) -> list[wire.Control]:
    return [wire.decode(p.data).code for p in packets]


def test_other_face_shape_model_ends_the_call_in_one_line() -> None:
    mine = shape.shipped()
    assert mine is not None
    dec, now = _rig_session(_rig(dataclasses.replace(mine, coef_std=mine.coef_std * 1.01)))
    assert dec.render() is None and dec.kf_id is None
    assert dec.error is not None and "\n" not in dec.error
    assert dec.error.startswith("keyframe rig: coded with face-shape model ")
    assert dec.error.endswith(f"this receiver has {mine.model_id.hex()}")
    assert _codes(dec.poll()) == [wire.Control.BYE]
    for seq in range(1, 6):  # parameters and polls go on arriving: never another keyframe request
        now[0] += 1.0
        assert dec.receive(_params(seq)) == [] and dec.poll() == []
    assert dec.stats.keyframe_requests == 0


def test_corrupt_rig_is_counted_and_requested_again() -> None:
    mine = shape.shipped()
    assert mine is not None
    dec, now = _rig_session(_rig(mine)[:-3])  # this receiver's model, the coded body cut short
    assert dec.render() is None and dec.kf_id is None and dec.error is None
    assert dec.stats.bad_packets == 1 and dec.stats.last_error == "keyframe: keyframe rig: truncated"
    now[0] += 1.0
    assert _codes(dec.poll()) == [wire.Control.KEYFRAME_REQUEST]


def test_real_clip_in_memory_small_packets() -> None:
    frames = read_frames("DPE/s.mp4", 40)
    clock = driver.TickClock()
    enc, dec = FaceEncoder(fps=25), FaceDecoder(clock=clock)
    out = list(driver.run(frames, enc, dec, 25, clock=clock))
    # Two frames per message, played one period apart: the keyframe picture shows alone at tick 0
    # (frame 0's parameters wait for frame 1), frame 39 would show at tick 40.
    assert enc.stats.keyframes == 1 and dec.stats.rendered == 40
    params_bytes = [len(p.data) for o in out[1:] for p in o.packets if wire.is_params(p.data)]
    # two frames each, and 2 bytes more while a region is drawn from a reference
    assert max(params_bytes) < 30 and np.mean(params_bytes) < 22
    # the rest after the keyframe: reference pictures of the eyes or the mouth, each well under a keyframe
    others = [len(p.data) for o in out[1:] for p in o.packets if not wire.is_params(p.data)]
    assert len(others) == enc.stats.references and all(n < 1500 for n in others)
    assert all(o.output is not None and o.output.shape == (256, 256, 3) for o in out)
    assert psnr(out[-1].output, enc.last_crop) > 20
    enc.close()


def test_stretch_without_face_is_reported_and_call_continues() -> None:
    faces = read_frames("DPE/s.mp4", 30)
    blank = [np.full_like(faces[0], 128)] * 12
    frames = faces[:12] + blank + faces[12:]
    clock = driver.TickClock()
    enc, dec = FaceEncoder(fps=25), FaceDecoder(clock=clock)
    events: list[str] = []
    rendered_before = 0
    for r in driver.run(frames, enc, dec, 25, clock=clock):
        events += enc.events
        enc.events.clear()
        if r.index == 11:
            rendered_before = dec.stats.rendered
        assert r.output is not None and r.output.shape == (256, 256, 3)
    assert any("no face in the picture" in e for e in events)
    assert any("face back" in e for e in events)
    assert enc.stats.no_face_frames >= 12 and enc.stats.keyframes == 2
    assert dec.stats.rendered > rendered_before + 10  # rendering resumed after the stretch
    enc.close()


def test_keyframe_has_no_sei_and_keeps_quality() -> None:
    from models.sample import photo

    image = photo()[32:288, 32:288]
    data = keyframe.encode(image)
    nal_types = [data[i + 3] & 0x1F for i in range(len(data) - 3) if data[i : i + 3] == b"\x00\x00\x01"]
    assert keyframe.NAL_SEI not in nal_types and 7 in nal_types and 5 in nal_types  # SPS and IDR kept
    assert psnr(keyframe.decode(data, 256), image) > 30
    with pytest.raises(keyframe.KeyframeError, match=r"^keyframe is 256x256, expected 128x128$"):
        keyframe.decode(data, 128)


def test_predicted_pictures_decode_only_after_their_chain() -> None:
    """A picture predicted from the keyframe's bytes decodes only with them, to the picture the
    sender decodes, and costs far less than the same picture intra-coded; a chain of a predicted
    keyframe and a reference after it decodes the same way."""
    from models.sample import photo

    base = photo()[32:288, 32:288]
    moved, more = np.roll(base, 3, axis=1), np.roll(base, 5, axis=0)  # the same face a little aside
    root = keyframe.Coded(base, keyframe.encode(base))
    assert keyframe.is_intra(root.data)
    data = keyframe.encode_predicted([root], moved, qp=30)
    assert data is not None and not keyframe.is_intra(data)
    assert keyframe.encode_predicted([root], moved, qp=30) == data  # deterministic
    assert psnr(keyframe.decode(data, 256, [root.data]), moved) > 30
    assert len(data) < len(keyframe.encode(moved)) / 2
    with pytest.raises(keyframe.KeyframeError, match=r"^keyframe does not decode"):
        keyframe.decode(data, 256)  # without its keyframe
    assert np.array_equal(keyframe.decode(root.data, 256, [root.data]), keyframe.decode(root.data, 256))
    chain = [root, keyframe.Coded(moved, data, 30)]
    ref = keyframe.encode_predicted(chain, more, qp=35)
    assert ref is not None and psnr(keyframe.decode(ref, 256, [root.data, data]), more) > 28
    # a chain that is not what its pictures re-encode to: no prediction, the caller sends intra
    assert keyframe.encode_predicted([keyframe.Coded(moved, root.data)], moved, qp=30) is None
    assert keyframe.encode_predicted([root, keyframe.Coded(moved, data, 33)], more, qp=35) is None


def test_a_predicted_keyframe_decodes_only_after_the_intra_keyframe_it_names() -> None:
    dec, renderer, msgs = _session()
    for m in msgs:
        dec.receive(m)
    dec.render()
    img = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    root = keyframe.Coded(img, keyframe.encode(img))
    p = keyframe.encode_predicted([root], np.roll(img, 2, axis=0), qp=30)
    assert p is not None
    # its base is keyframe 0, which this receiver holds: decoded, acknowledged, shown
    good = wire.split_keyframe(1, wire.pack_keyframe(wire.Keyframe(p, b"aux1", base=0)))
    acks = [wire.decode(r.data) for c in good for r in dec.receive(wire.encode(c))]
    assert acks == [wire.ControlMessage(wire.Control.KEYFRAME_ACK, 1)] and dec.stats.bad_packets == 0
    dec.render()
    assert renderer.keyframes == [b"aux", b"aux1"]
    # one naming a keyframe this receiver never had: refused, and it asks for a keyframe at once
    bad = wire.split_keyframe(2, wire.pack_keyframe(wire.Keyframe(p, b"aux2", base=7)))
    replies = [wire.decode(r.data) for c in bad for r in dec.receive(wire.encode(c))]
    assert replies == [wire.ControlMessage(wire.Control.KEYFRAME_REQUEST, 1)]
    assert dec.stats.last_error == "keyframe predicted from keyframe 7, which is not here"


def test_a_keyframe_request_is_answered_with_an_intra_keyframe() -> None:
    frames = read_frames("EAMM/happy.mp4", 40)
    enc = FaceEncoder("mesh", SIZE, 25.0)
    try:
        kfs = []
        for i, f in enumerate(frames):
            if i == 15:  # the sender's own refresh (codec.refresh)
                enc.request_keyframe()
            if i == 30:
                enc.receive(wire.encode(wire.ControlMessage(wire.Control.KEYFRAME_REQUEST, 1)))
            for pkt in enc.encode(f, i * 40):
                m = wire.decode(pkt.data, enc.coder)
                if isinstance(m, wire.KeyframeChunk):
                    kfs.append(wire.unpack_keyframe(m.data))
        # the first is intra; the sender's own refresh may be predicted from it; an answer to the
        # receiver's request (it may have lost anything) is intra
        assert [k.base for k in kfs] == [None, 0, None]
        assert keyframe.is_intra(kfs[0].h264) and keyframe.is_intra(kfs[2].h264)
    finally:
        enc.close()


def test_keyframe_landmarks_round_trip_and_reject_bombs() -> None:
    import zlib

    from models.mesh import landmarks

    lm = np.random.default_rng(3).uniform(0, 256, (478, 3)).astype(np.float32)
    data = landmarks.encode(lm)  # no crop size: the zlib form
    assert len(data) < 478 * 3 * 2
    assert np.abs(landmarks.decode(data, 256) - lm).max() <= landmarks.LANDMARK_STEP_PX / 2
    for bad, why in (
        (zlib.compress(bytes(10**6)), "expected 2868 bytes"),
        (b"junk", "not zlib data"),
        (data[:-4], "expected 2868 bytes"),
    ):
        with pytest.raises(ValueError, match=why):
            landmarks.decode(bad, 256)


def test_receiver_without_the_callers_model_says_so_and_ends_the_call() -> None:
    dec = FaceDecoder()
    header = wire.Header("fv2v", 256, 25.0, 45, QuantSpec().to_list(), "fv2v-base-0123456789ab")
    replies = dec.receive(wire.encode(header))
    assert [wire.decode(r.data) for r in replies] == [wire.ControlMessage(wire.Control.BYE, 0)]
    assert dec.error == (
        "the caller uses fv2v model fv2v-base-0123456789ab, this receiver has no weights: "
        "pass --weights with the caller's weights"
    )
