"""Reference pictures for what one keyframe cannot show: the bank policy, the region warp, and a
real call in memory (closed loop, acknowledgements, a lost reference, hostile names)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pytest
from conftest import read_frames
from test_mesh import SIZE, synthetic_landmarks, textured_image

from codec import driver, keyframe, wire
from codec.bank import BankPolicy, ReferenceBank
from codec.decoder import FaceDecoder
from codec.encoder import FaceEncoder
from codec.metrics import psnr, psnr_of_mse
from codec.params import FrameParams, dequantize
from models.mesh import landmarks as wire_landmarks
from models.mesh import mouth, reference
from models.mesh.renderer import MeshRenderer

MOUTH, EYES = 1 << reference.REGION_NAMES.index("mouth"), 1 << reference.REGION_NAMES.index("eyes")
CLIP = "EAMM/surprised.mp4"  # wide-open mouth and eyes, a held-out person
CLIP_FRAMES = 100
FPS = 25.0


# -- the bank policy ---------------------------------------------------------------------------
def bank(**knobs: float) -> ReferenceBank:
    b = ReferenceBank(2, BankPolicy(**knobs))  # type: ignore[arg-type]
    b.reset(0.0)
    return b


def test_bank_waits_after_a_keyframe_and_between_references() -> None:
    b = bank(min_interval_s=1.0)
    assert b.allocate(0.5) is None  # the keyframe was just sent
    assert b.allocate(1.0) == 1
    b.add(1, MOUTH, 1.0)
    assert b.allocate(1.5) is None
    assert b.allocate(2.0) == 2
    assert set(b.slots) == {1}


def test_only_acknowledged_references_are_named() -> None:
    b = bank()
    b.add(1, MOUTH, 1.0)
    errors = [{0: 100.0}, {0: 100.0, 1: 1.0}]
    assert b.choose(errors, 1.1) == (0, 0)  # not acknowledged yet: the receiver may not hold it
    b.ack(1)
    assert b.slots[1].acked
    assert b.choose(errors, 1.2) == (0, 1)


def test_choice_has_hysteresis() -> None:
    b = bank(switch=0.8)
    for n in (1, 2):
        b.add(n, MOUTH, 1.0)
        b.ack(n)
    assert b.choose([{0: 1.0}, {0: 100.0, 1: 10.0, 2: 20.0}], 2.0) == (0, 1)
    assert b.choose([{0: 1.0}, {0: 100.0, 1: 10.0, 2: 9.0}], 2.1) == (0, 1)  # 9 is not below 0.8 * 10
    assert b.choose([{0: 1.0}, {0: 100.0, 1: 10.0, 2: 7.0}], 2.2) == (0, 2)


def test_a_region_not_measured_keeps_its_choice_and_its_slot_in_use() -> None:
    b = bank()
    b.add(1, MOUTH, 1.0)
    b.ack(1)
    assert b.choose([{0: 1.0}, {0: 100.0, 1: 1.0}], 2.0) == (0, 1)
    assert b.choose([{0: 50.0}, {}], 2.04) == (0, 1)  # only the eyes measured: the mouth keeps slot 1
    assert b.slots[1].last_used_s == 2.04  # ... and that counts as using it
    assert b.region_db[1] == psnr_of_mse(1.0)  # an unmeasured region's error is not a new sample


def test_sender_measures_only_the_regions_asked_for(renderer: MeshRenderer) -> None:
    eyes, mouth = renderer.region_errors(zero(renderer), textured_image(7), MOUTH)
    assert eyes == {} and set(mouth) == {0}


def test_a_full_bank_replaces_the_reference_unused_longest_once_quiet() -> None:
    b = bank(slots=2, min_interval_s=0.0, quiet_s=1.0)
    for n in (1, 2):
        b.add(n, MOUTH, 1.0)
        b.ack(n)
    b.choose([{0: 1.0}, {0: 100.0, 1: 1.0, 2: 50.0}], 1.5)  # slot 1 in use
    assert b.allocate(1.6) is None  # slot 2 was sent 0.6 s ago: packets may still name it
    assert b.allocate(2.1) == 2  # slot 1 is the current choice: never replaced
    b.choose([{0: 1.0}, {0: 1.0, 1: 50.0, 2: 50.0}], 2.2)  # back to the keyframe (1.0 < 0.8 * 50)
    assert b.allocate(3.1) == 2  # slot 2: unused since 1.0, slot 1 since 1.5


def test_a_new_keyframe_keeps_the_references_unless_the_receiver_lost_them() -> None:
    b = bank(min_interval_s=0.0)
    b.add(1, MOUTH, 1.0)
    b.ack(1)
    assert b.choose([{0: 1.0}, {0: 100.0, 1: 1.0}], 1.5) == (0, 1)
    b.reset(4.0)
    assert set(b.slots) == {1} and b.slots[1].acked
    assert b.keep(4.0) == (0, 0)  # every region starts from the new keyframe ...
    assert b.choose([{0: 1.0}, {0: 100.0, 1: 1.0}], 4.1) == (0, 1)  # ... and may go back to the reference
    b.reset(5.0, clear=True)
    assert not b.slots and b.choose([{0: 1.0}, {0: 100.0, 1: 1.0}], 5.1) == (0, 0)


def test_an_acknowledgement_counts_only_for_the_picture_it_names() -> None:
    b = bank()
    b.add(1, MOUTH, 1.0, kf_id=3)
    b.ack(1, kf_id=2)  # the slot's earlier picture, sent under keyframe 2
    assert not b.slots[1].acked
    b.ack(1, kf_id=3)
    assert b.slots[1].acked


def mse_of(db: float) -> float:
    return 255.0**2 / 10 ** (db / 10)


def test_a_region_that_stays_worse_calls_for_a_reference() -> None:
    b = bank(threshold_db=3.0, hold_s=0.1, reference_s=1.0)
    for i in range(25):  # the first second sets the level: 30 dB in the mouth
        b.choose([{0: mse_of(32.0)}, {0: mse_of(30.0)}], i / 25)
    assert b.region_level[1] == pytest.approx(30.0) and b.bad_regions == 0
    b.choose([{0: mse_of(32.0)}, {0: mse_of(26.0)}], 1.04)  # one bad frame: a blip
    b.choose([{0: mse_of(32.0)}, {0: mse_of(29.0)}], 1.08)  # within the threshold: the timer restarts
    assert b.bad_regions == 0
    for t in (1.12, 1.16, 1.20):
        b.choose([{0: mse_of(32.0)}, {0: mse_of(26.0)}], t)
    assert b.bad_regions == 0  # 0.08 s so far
    b.choose([{0: mse_of(32.0)}, {0: mse_of(26.0)}], 1.24)
    assert b.bad_regions == 0b10  # the mouth, for 0.12 s: a reference is due
    b.add(1, 0b10, 1.24)
    assert b.bad_regions == 0  # and its error must build up again


def test_a_reference_also_covers_the_other_regions_drawn_badly_now() -> None:
    b = bank(threshold_db=3.0, hold_s=0.1, reference_s=1.0)
    for i in range(25):  # levels: eyes 32 dB, mouth 30 dB
        b.choose([{0: mse_of(32.0)}, {0: mse_of(30.0)}], i / 25)
    b.choose([{}, {0: mse_of(25.0)}], 1.04)  # the mouth goes bad first ...
    b.choose([{0: mse_of(26.0)}, {}], 1.08)  # ... then the eyes, measured in turn
    assert b.reference_regions == 0  # nothing has lasted the hold yet
    b.choose([{}, {0: mse_of(25.0)}], 1.16)
    assert b.bad_regions == MOUTH and b.reference_regions == EYES | MOUTH
    b.add(1, EYES | MOUTH, 1.16)
    assert b.bad_regions == 0 and b.low_regions == 0 and b.reference_regions == 0
    b.choose([{0: mse_of(31.0)}, {}], 1.2)  # the eyes are fine again
    b.choose([{}, {0: mse_of(25.0)}], 1.24)
    b.choose([{}, {0: mse_of(25.0)}], 1.36)
    assert b.reference_regions == MOUTH  # only what is drawn badly


def test_level_is_near_the_best_of_the_first_second() -> None:
    b = bank()
    for i, db in enumerate([30, 30, 30, 20, 30, 30, 20, 30]):  # talking during the first second
        b.choose([{0: mse_of(30.0)}, {0: mse_of(db)}], i / 25)
    assert b.region_level[1] == pytest.approx(30.0)


def test_policy_knobs_are_checked() -> None:
    with pytest.raises(ValueError, match="slots"):
        BankPolicy(slots=16)
    with pytest.raises(ValueError, match="threshold"):
        BankPolicy(threshold_db=0.0)


# -- the region warp ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def renderer() -> MeshRenderer:
    r = MeshRenderer(SIZE, segment_background=False)
    r.set_keyframe(textured_image(1), wire_landmarks.encode(synthetic_landmarks(), SIZE))
    return r


def zero(r: MeshRenderer, refs: tuple[int, ...] = ()) -> FrameParams:
    assert r.rig is not None
    return FrameParams(expression=np.zeros(r.rig.model.n_expr, np.float32), references=refs)


def test_region_is_drawn_from_the_reference_and_nowhere_else(renderer: MeshRenderer) -> None:
    aux = wire_landmarks.encode(synthetic_landmarks(), SIZE)
    other = textured_image(7)
    renderer.add_reference(1, other, aux, MOUTH)
    assert renderer.references == {1: MOUTH}
    base = renderer.render(zero(renderer))
    out = renderer.render(zero(renderer, (0, 1)))
    assert renderer.rig is not None
    lm = renderer.rig.landmarks
    full = reference.region_mask(lm, 1, SIZE, feather=reference.FEATHER) > 0.999
    assert full.sum() > 200  # the mouth region proper
    # the same landmarks on both pictures: inside the mouth the frame is the reference's picture
    assert np.abs(out[full].astype(int) - other[full]).max() <= 2
    outside = reference.region_mask(lm, 1, SIZE) == 0
    assert np.array_equal(out[outside], base[outside])
    # the eyes are not in this reference: naming it for them changes nothing
    assert np.array_equal(renderer.render(zero(renderer, (1, 0))), base)


def test_sender_measures_each_source_of_a_region(renderer: MeshRenderer) -> None:
    aux = wire_landmarks.encode(synthetic_landmarks(), SIZE)
    other = textured_image(7)
    renderer.add_reference(1, other, aux, MOUTH)
    eyes, mouth = renderer.region_errors(zero(renderer), other)
    assert set(eyes) == {0} and set(mouth) == {0, 1}
    assert mouth[1] < 5.0 < mouth[0]  # the crop is the reference's picture: it serves, the keyframe does not


def test_a_region_is_measured_only_where_a_face_triangle_covers_it() -> None:
    """Beyond the face's outline the frame shows the whole-frame warp whatever the source: those
    pixels of a region's box are no source's error (they counted as black, and a constant added to
    every source's error blunted the choice between them)."""
    lm = synthetic_landmarks()
    tri = reference.face_triangles(lm, 468)
    picture = textured_image(3)
    eyes = reference.REGION_NAMES.index("eyes")
    whole = reference.RegionWarp(tri, lm, SIZE, eyes)
    assert whole.box is not None
    x0, y0, x1, y1 = whole.box
    left = tri[lm[tri, 0].mean(1) < (x0 + x1) / 2]  # a mesh that covers only the box's left half
    warp = reference.RegionWarp(left, lm, SIZE, eyes)
    src = reference.make_source(picture, lm, 0b11, left)
    patch = warp.patch(src)
    covered = patch[..., 3] > 0
    assert 0.2 < (covered & (warp.mask > 0)).sum() / (warp.mask > 0).sum() < 0.8
    crop_y = np.full((SIZE, SIZE), 255.0, np.float32)  # white where nothing is drawn from a source
    crop_y[y0:y1, x0:x1][covered] = (patch[..., :3] @ reference.LUMA)[covered]
    (err,) = warp.errors([src], crop_y)
    assert err < 1.0


def test_a_shut_reference_is_not_measured_for_an_open_frame(renderer: MeshRenderer) -> None:
    """A reference whose lips are closed would stretch them over the open mouth of the frame (a
    smear that can still beat the keyframe's error): the sender does not offer it for the mouth."""
    assert renderer.rig is not None
    frame_lm = renderer.rig.landmarks  # the frame drawn at zero parameters: the keyframe's face
    shut = frame_lm.copy()
    for upper, lower in reference.OPENING_PAIRS[1]:
        shut[lower] = shut[upper]
    assert reference.opening(shut, 1) == 0.0
    assert not reference.can_show(shut, frame_lm, 1)
    assert reference.can_show(frame_lm, shut, 1)  # a wider source may close
    assert reference.can_show(shut, frame_lm, 0)  # the eyes are another opening
    other = textured_image(7)
    renderer.add_reference(1, other, wire_landmarks.encode(shut, SIZE), MOUTH)
    renderer.add_reference(2, other, wire_landmarks.encode(frame_lm, SIZE), MOUTH)
    _, mouth = renderer.region_errors(zero(renderer), other)
    assert set(mouth) == {0, 2}


def open_mouth(ry: float) -> np.ndarray:
    """Landmarks with eye corners 80 px apart and the inner lips on an ellipse ry px high."""
    lm = np.zeros((478, 3))
    lm[reference.EYE_CORNERS[0], :2], lm[reference.EYE_CORNERS[1], :2] = (88, 100), (168, 100)
    lower, upper = mouth.INNER_CONTOUR[:11], mouth.INNER_CONTOUR[11:]
    for idx, theta, sign in ((lower, np.linspace(np.pi, 0, 11), 1), (upper, np.linspace(0, np.pi, 11)[1:-1], -1)):
        lm[idx, 0] = 128 + 30 * np.cos(theta)
        lm[idx, 1] = 170 + sign * ry * np.sin(theta)
    return lm


def test_a_mouth_open_wider_than_its_source_is_dark_inside() -> None:
    """Lips parted wider than the keyframe's are not its lips stretched: the inside turns dark, in
    proportion to the extra opening; outside the inner lips nothing changes."""
    lm = open_mouth(12.0)
    shut = lm.copy()
    for upper, lower in reference.OPENING_PAIRS[1]:
        shut[lower] = shut[upper]
    assert mouth.darkness(lm, lm) == 0.0 and mouth.darkness(shut, lm) == 0.0
    assert mouth.darkness(lm, shut) == 1.0  # opened by more than FULL_GAIN
    assert reference.opening(lm, 1) > mouth.SHOWN
    assert mouth.darkness(open_mouth(30.0), lm) == 0.0  # the source shows its own inside: stretch it
    frame = np.full((SIZE, SIZE, 3), 200, np.uint8)
    before = frame.copy()
    mouth.darken(frame, lm, 1.0)
    inside = np.zeros((SIZE, SIZE), np.uint8)
    cv2.fillPoly(inside, [np.rint(lm[mouth.INNER_CONTOUR, :2]).astype(np.int32)], 1)
    core = cv2.erode(inside, np.ones((7, 7), np.uint8)) > 0
    assert core.sum() > 20
    assert np.all(frame[core] < 200 - 0.8 * (200 - max(mouth.COLOUR)))
    far = cv2.dilate(inside, np.ones((15, 15), np.uint8)) == 0
    assert np.array_equal(frame[far], before[far])
    half = before.copy()
    mouth.darken(half, lm, 0.5)
    assert np.all((half[core] > frame[core]) & (half[core] < 200))


def test_the_sender_measures_the_mouth_darkened_as_the_receiver_draws_it() -> None:
    lm = open_mouth(12.0)
    frame = np.random.default_rng(5).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    drawn = frame.copy()
    mouth.darken(drawn, lm, 0.7)
    x0, y0, x1, y1 = box = (80, 130, 180, 200)  # the mouth and around it, as a region's box
    y = (frame.astype(np.float32) @ reference.LUMA)[y0:y1, x0:x1]
    got = mouth.darken_luma(y, box, lm, 0.7, SIZE)
    want = (drawn.astype(np.float32) @ reference.LUMA)[y0:y1, x0:x1]
    assert np.abs(got - want).max() < 1.0  # the receiver rounds each channel to uint8
    assert np.abs(y - want).max() > 50  # and it did darken
    assert mouth.darken_luma(y, box, lm, 0.0, SIZE) is y
    corner = np.zeros((20, 20), np.float32)
    assert mouth.darken_luma(corner, (0, 0, 20, 20), lm, 1.0, SIZE) is corner  # off the mouth: kept
    finish = mouth.darkened(box, lm, [0.0, 0.7], SIZE)
    assert finish(0, y) is y and np.array_equal(finish(1, y), got)


def test_a_slot_not_held_draws_from_the_keyframe(renderer: MeshRenderer) -> None:
    base = renderer.render(zero(renderer))
    assert np.array_equal(renderer.render(zero(renderer, (9, 9))), base)


def test_sent_picture_keeps_only_its_regions(renderer: MeshRenderer) -> None:
    aux = wire_landmarks.encode(synthetic_landmarks(), SIZE)
    image = textured_image(3)
    sent = renderer.reference_picture(image, aux, MOUTH)
    lm = wire_landmarks.decode(aux, SIZE)
    keep = reference.regions_mask(lm, MOUTH, SIZE) > 0
    assert np.array_equal(sent[keep], image[keep])
    far = reference.regions_mask(lm, MOUTH, SIZE, reference.SENT_MARGIN) == 0
    assert (sent[far] == reference.FILL_GREY).all() and far.mean() > 0.8


@pytest.mark.parametrize(
    ("slot", "regions", "shape", "message"),
    [
        (0, MOUTH, (SIZE, SIZE, 3), "slot 0"),
        (reference.MAX_SLOTS + 1, MOUTH, (SIZE, SIZE, 3), "slot 16"),
        (1, 0, (SIZE, SIZE, 3), "regions 0"),
        (1, 4, (SIZE, SIZE, 3), "regions 4"),
        (1, MOUTH, (SIZE, SIZE, 4), "expected"),
    ],
)
def test_bad_references_are_refused(
    renderer: MeshRenderer, slot: int, regions: int, shape: tuple, message: str
) -> None:
    aux = wire_landmarks.encode(synthetic_landmarks(), SIZE)
    with pytest.raises(ValueError, match=message):
        renderer.add_reference(slot, np.zeros(shape, np.uint8), aux, regions)


def test_the_bank_outlives_a_keyframe() -> None:
    """A reference is placed by its own landmarks: after a keyframe of the face elsewhere in the crop,
    the mouth drawn from it is its picture, moved with the face."""
    r = MeshRenderer(SIZE, segment_background=False)
    lm = synthetic_landmarks()
    aux = wire_landmarks.encode(lm, SIZE)
    other = textured_image(2)
    r.set_keyframe(textured_image(1), aux)
    r.add_reference(2, other, aux, EYES | MOUTH)
    dx, dy = 4, 3
    moved = lm.copy()
    moved[:, 0] += dx
    moved[:, 1] += dy
    r.set_keyframe(textured_image(5), wire_landmarks.encode(moved, SIZE))
    assert r.references == {2: EYES | MOUTH}
    assert r.rig is not None
    out = r.render(zero(r, (0, 2)))
    full = reference.region_mask(r.rig.landmarks, 1, SIZE, feather=reference.FEATHER) > 0.999
    assert full.sum() > 200
    shifted = np.roll(other, (dy, dx), axis=(0, 1))
    assert np.abs(out[full].astype(int) - shifted[full]).max() <= 2


# -- a real call in memory ---------------------------------------------------------------------
@dataclass
class Call:
    encoder: FaceEncoder
    decoder: FaceDecoder
    ticks: list[driver.DriverFrame]


def call(frames: list[np.ndarray], link: driver.LossyLink | None = None) -> Call:
    clock = driver.TickClock()
    enc = FaceEncoder("mesh", SIZE, FPS, references=BankPolicy(threshold_db=2.0))
    dec = FaceDecoder(clock=clock)
    ticks = list(driver.run(frames, enc, dec, FPS, link, clock=clock, render_at=lambda i: True))
    return Call(enc, dec, ticks)


def sent(c: Call, kind: type) -> list[tuple[int, wire.Message]]:
    """(reliable index, 1-based, or 0 for unreliable; message) of everything the encoder sent."""
    out, n = [], 0
    for t in c.ticks:
        for p in t.packets:
            n += p.reliable
            out.append((n if p.reliable else 0, wire.decode(p.data, c.encoder.coder)))
    return [(i, m) for i, m in out if isinstance(m, kind)]


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return read_frames(CLIP, CLIP_FRAMES)


@pytest.fixture(scope="module")
def real_call(frames: list[np.ndarray]) -> Call:
    c = call(frames)
    yield c
    c.encoder.close()


def test_references_are_sent_acknowledged_and_drawn(real_call: Call) -> None:
    enc, dec = real_call.encoder, real_call.decoder
    refs = sent(real_call, wire.Reference)
    assert enc.stats.references == len(refs) >= 1
    assert enc.stats.reference_bytes == sum(len(wire.encode(m)) for _, m in refs)
    assert dec.stats.references == len(refs) and dec.stats.reference_misses == 0
    assert all(len(m.data) < 2000 for _, m in refs)  # only the regions travel: well under a keyframe
    params = [m for _, m in sent(real_call, wire.Params)]
    named = [m for m in params if m.refs]
    assert named, "no frame drew a region from a reference"
    acks = [wire.decode(r) for t in real_call.ticks for r in t.replies]
    acks = [
        wire.parse_ack(m.arg)
        for m in acks
        if isinstance(m, wire.ControlMessage) and m.code == wire.Control.REFERENCE_ACK
    ]
    assert sorted(acks) == sorted((m.kf_id, m.slot) for _, m in refs)
    assert enc.bank is not None and set(enc.bank.slots) == {m.slot for _, m in refs}


def test_references_are_predicted_from_their_keyframe(real_call: Call) -> None:
    chains: dict[int, list[bytes]] = {}  # kf_id -> the pictures it decodes from, itself last
    for _, m in sent(real_call, wire.KeyframeChunk):
        assert m.count == 1
        kf = wire.unpack_keyframe(m.data)
        chains[m.kf_id] = [kf.h264] if kf.base is None else [chains[kf.base][0], kf.h264]
    refs = [m for _, m in sent(real_call, wire.Reference)]
    assert refs
    for m in refs:
        h264 = wire.unpack_keyframe(m.data).h264
        assert not keyframe.is_intra(h264)
        assert keyframe.decode(h264, SIZE, chains[m.kf_id]).shape == (SIZE, SIZE, 3)


def test_sender_draws_exactly_what_the_receiver_draws(real_call: Call) -> None:
    """Closed loop: the sender's renderer holds the same bank, so a frame naming references is the
    same picture on both sides."""
    enc, dec = real_call.encoder, real_call.decoder
    assert enc.monitor is not None and dec.renderer is not None
    last = [m for _, m in sent(real_call, wire.Params) if m.refs][-1]
    for i, values in enumerate(last.frames):
        p = dequantize(values, enc.quant)
        p.references = last.frame_refs(i)
        q = dequantize(values, enc.quant)
        q.references = last.frame_refs(i)
        assert np.array_equal(enc.monitor.renderer.render(p), dec.renderer.render(q))


def test_a_lost_reference_is_never_named(frames: list[np.ndarray], real_call: Call) -> None:
    first = sent(real_call, wire.Reference)[0][0]
    lossy = call(frames, driver.LossyLink(driver.Impairment(lose_reliable=frozenset({first}))))
    try:
        lost = sent(lossy, wire.Reference)[0][1]
        assert isinstance(lost, wire.Reference)
        assert lossy.decoder.stats.reference_misses == 0
        assert lossy.decoder.stats.references == lossy.encoder.stats.references - 1
        assert all(lost.slot not in m.refs[0] for _, m in sent(lossy, wire.Params) if m.refs and len(m.refs) == 1)
    finally:
        lossy.encoder.close()


def test_hostile_reference_names_fall_back_to_the_keyframe(real_call: Call) -> None:
    """A receiver that never got the references (or a sender naming slots that do not exist) shows
    the keyframe's warp for those regions and counts the misses."""
    clock = driver.TickClock()
    dec = FaceDecoder(clock=clock)
    plain = FaceDecoder(clock=clock)
    for t in real_call.ticks[:3]:  # the header and the first keyframe, nothing else reliable
        for p in t.packets:
            if p.reliable and not isinstance(wire.decode(p.data), wire.Reference):
                dec.receive(p.data)
                plain.receive(p.data)
    dec.render()
    plain.render()
    coder = real_call.encoder.coder
    msg = next(m for _, m in sent(real_call, wire.Params) if m.frames and m.kf_id == dec.kf_id)
    named = wire.Params(msg.capture_ms, msg.kf_id, msg.flags, msg.frames, msg.offsets_ms, ((3, 15),))
    dec.receive(wire.encode(named, coder))
    plain.receive(wire.encode(wire.Params(msg.capture_ms, msg.kf_id, msg.flags, msg.frames, msg.offsets_ms), coder))
    a, b = dec.render(), plain.render()
    assert a is not None and np.array_equal(a, b)
    assert dec.stats.reference_misses == 2 and dec.stats.bad_packets == 0


def test_references_for_another_keyframe_or_undecodable_are_not_acknowledged(real_call: Call) -> None:
    clock = driver.TickClock()
    dec = FaceDecoder(clock=clock)
    for t in real_call.ticks[:3]:
        for p in t.packets:
            if p.reliable:
                dec.receive(p.data)
    kf = dec._pending_kf[0] if dec._pending_kf is not None else dec.kf_id
    assert kf is not None
    stale = wire.Reference((kf + 1) % wire.KF_MODULO, 1, MOUTH, b"")
    assert dec.receive(wire.encode(stale)) == [] and dec.stats.stale == 1
    junk = wire.Reference(kf, 1, MOUTH, wire.pack_keyframe(wire.Keyframe(b"\x00\x00\x01junk", b"")))
    assert dec.receive(wire.encode(junk)) == []
    assert dec.stats.bad_packets == 1 and dec.stats.last_error.startswith("reference: ")


class RefreshingEncoder(FaceEncoder):
    """Asks for a new keyframe at one frame, as the sender's own refresh would."""

    refresh_at = 60

    def encode(self, frame: np.ndarray, capture_ms: int) -> list:
        if self.stats.frames == self.refresh_at:
            self.request_keyframe()
        return super().encode(frame, capture_ms)


def test_references_serve_the_next_keyframe_on_both_sides(frames: list[np.ndarray]) -> None:
    clock = driver.TickClock()
    enc = RefreshingEncoder("mesh", SIZE, FPS, references=BankPolicy(threshold_db=2.0))
    dec = FaceDecoder(clock=clock)
    try:
        ticks = list(driver.run(frames, enc, dec, FPS, clock=clock, render_at=lambda i: True))
        c = Call(enc, dec, ticks)
        chunks = sent(c, wire.KeyframeChunk)
        assert len({m.kf_id for _, m in chunks}) >= 2
        second = chunks[-1][0]  # reliable index of the new keyframe's last chunk
        before = {m.slot for i, m in sent(c, wire.Reference) if i < second}
        assert before, "no reference before the refresh"
        after = [m for _, m in sent(c, wire.Params) if m.refs and m.kf_id == enc.kf_id % wire.PARAMS_KF_MODULO]
        assert any(set(m.frame_refs(i)) & before for m in after for i in range(len(m.frames)))
        assert dec.stats.reference_misses == 0
        assert enc.monitor is not None and dec.renderer is not None
        last = after[-1]
        for i, values in enumerate(last.frames):
            p, q = dequantize(values, enc.quant), dequantize(values, enc.quant)
            p.references = q.references = last.frame_refs(i)
            assert np.array_equal(enc.monitor.renderer.render(p), dec.renderer.render(q))
    finally:
        enc.close()


def test_only_a_receiver_that_lost_its_bank_gets_it_emptied(frames: list[np.ndarray]) -> None:
    enc = FaceEncoder("mesh", SIZE, FPS, references=BankPolicy(threshold_db=2.0))
    try:
        enc.encode(frames[0], 0)
        assert enc.bank is not None and enc.stats.keyframes == 1
        enc.bank.add(1, MOUTH, 0.5)
        enc.receive(wire.encode(wire.ControlMessage(wire.Control.KEYFRAME_REQUEST, 0)))  # a keyframe lost
        enc.encode(frames[1], 600)
        assert enc.stats.keyframes == 2 and set(enc.bank.slots) == {1}
        enc.receive(wire.encode(wire.ControlMessage(wire.Control.KEYFRAME_REQUEST, -1)))  # restarted: holds nothing
        enc.encode(frames[2], 1200)
        assert enc.stats.keyframes == 3 and enc.bank.slots == {}
    finally:
        enc.close()


def test_references_off_sends_none(frames: list[np.ndarray]) -> None:
    clock = driver.TickClock()
    enc = FaceEncoder("mesh", SIZE, FPS, references=False)
    dec = FaceDecoder(clock=clock)
    try:
        for _ in driver.run(frames[:30], enc, dec, FPS, clock=clock):
            pass
        assert enc.bank is None and enc.stats.references == 0
    finally:
        enc.close()


def test_preview_is_the_frame_at_half_resolution(renderer: MeshRenderer) -> None:
    aux = wire_landmarks.encode(synthetic_landmarks(), SIZE)
    renderer.add_reference(1, textured_image(7), aux, MOUTH)
    assert renderer.rig is not None
    n = renderer.rig.model.n_expr
    for params in (
        zero(renderer),
        FrameParams(yaw=8.0, tx=0.02, expression=np.full(n, 0.01, np.float32), references=(0, 1)),
    ):
        small = cv2.resize(renderer.render(params), (SIZE // 2, SIZE // 2), interpolation=cv2.INTER_AREA)
        shown = renderer.preview(params, 2)
        assert shown.shape == small.shape and shown.dtype == np.uint8
        assert psnr(small, shown) > 30.0  # the same picture (a textured test image: sharp, so aliased)
