"""The packet format, version 2. PARAMS are compact binary; everything else is a msgpack array whose
first element packs (version << 4) | kind.

    HEADER     [tv, {profile, size, fps, n_expr, steps, model, epoch_ms, time_ms, entropy}]   reliable
    KEYFRAME   [tv, kf_id, index, count, chunk]                                             reliable
               chunks of a keyframe message {h264, aux} (Keyframe, pack_keyframe)
    REFERENCE  [tv, kf_id, slot, regions, {h264, aux}]                                      reliable
               a reference picture for the bank, sent under keyframe kf_id (Reference; one message)
    CONTROL    [tv, code, arg]                                                              reliable
    PARAMS     0b01KKKKNR, capture ms mod 2**16 (2 bytes, big-endian), [references],        unordered,
               range-coded frames                                                           no retransmits
               (KKKK: keyframe id mod 16; N: no face, no values; R: references follow: a count c,
               1 or the number of frames, then c bytes (slot of region 0) << 4 | (slot of region 1),
               one per frame, or one for all; slot 0 is the keyframe)

PARAMS carry 1..entropy.MAX_BATCH consecutive frames, coded with the probability model the header
carries (codec.entropy): the first frame against the keyframe only, the next ones against the frame
before them in the same message. A PARAMS message therefore decodes on its own: losing, delaying,
duplicating or reordering one never corrupts another. A frame may draw regions (eyes, mouth) from
a reference picture of the keyframe's bank instead of the keyframe (models.mesh.reference); the
sender names only references the receiver acknowledged, and a receiver that lacks one draws that
region from the keyframe. A msgpack array starts with 0x90-0x9F, so the
first byte tells PARAMS apart. There is no sequence number: capture times order the packets (the
receiver unwraps them against the newest one it accepted, starting from the header's time_ms).
Everything that arrives is untrusted: `decode` checks type, version, lengths and ranges and raises
WireError with one line that says what was wrong; a version-1 peer gets WireVersionError.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import msgpack
import numpy as np

from codec.entropy import MAX_BATCH, Coder, EntropyError

# 3: the reference bank kept through keyframes and the eyes settled between the lids (the sender's
# closed loop assumes the receiver draws as it does, so an older receiver is refused, not served).
# 4: a reference picture may be a P picture predicted from its keyframe's H.264 (codec.keyframe),
# which a v3 receiver cannot decode.
VERSION = 4
PAST_VERSIONS = (1, 2, 3)  # a caller of these gets a refusal it can read
MAX_PARAMS_BYTES = 512  # one PARAMS message of up to MAX_BATCH frames; a real one is 6-20 bytes
MAX_HEADER_BYTES = 16 * 1024  # the entropy model travels in it (~0.3 KB for 17 values, 8 KB at most)
KEYFRAME_CHUNK_BYTES = 16 * 1024  # below every SCTP implementation's message limit
MAX_MESSAGE_BYTES = KEYFRAME_CHUNK_BYTES + 64  # any single message
MAX_KEYFRAME_CHUNKS = 128  # 2 MiB per keyframe
MAX_VALUES = 192  # pose + expression values in one PARAMS packet
TIME_MODULO = 1 << 32  # header time_ms
KF_MODULO = 1 << 8  # keyframe ids of KEYFRAME and CONTROL messages
PARAMS_KF_MODULO = 16  # PARAMS name their keyframe modulo 16
PARAMS_TIME_MODULO = 1 << 16  # PARAMS capture times, ms
PARAMS_TAG_MASK, PARAMS_TAG = 0xC0, 0x40
PARAMS_NO_FACE_BIT = 0x02
PARAMS_REFS_BIT = 0x01
PARAMS_FIXED_BYTES = 3
REF_REGIONS = 2  # regions a frame may draw from references (models.mesh.reference.REGION_NAMES)
REF_SLOTS = 15  # reference slots 1..15 on the wire (a bank holds fewer)


class Kind(enum.IntEnum):
    HEADER = 1
    KEYFRAME = 2
    PARAMS = 3
    CONTROL = 4
    REFERENCE = 5


_HEADER_TAGS = frozenset((v << 4) | Kind.HEADER for v in (VERSION, *PAST_VERSIONS))  # this version's, past ones'


class Control(enum.IntEnum):
    KEYFRAME_REQUEST = 1  # arg: the kf_id the receiver has (or -1)
    KEYFRAME_ACK = 2  # arg: kf_id now in use at the receiver
    BYE = 3  # arg: 0
    FACE_LOST = 4  # arg: 1 lost, 0 back
    REFERENCE_ACK = 5  # arg: kf_id * 16 + slot of a reference now held by the receiver


class Flags(enum.IntFlag):
    NONE = 0
    NO_FACE = 1  # no usable face in this frame: hold or fade, values are empty


class WireError(ValueError):
    """A packet that cannot be decoded; the message is one line for the user."""


class WireVersionError(WireError):
    """A message of another wire format version (the peer runs an incompatible fvcall)."""

    def __init__(self, version: int, kind: int) -> None:
        self.version, self.kind = version, kind
        if version in PAST_VERSIONS:
            text = (
                f"the peer speaks fvcall wire format v{version}, this build speaks v{VERSION}:"
                " run the same fvcall on both ends"
            )
        else:
            text = f"unsupported packet version {version} (this build speaks {VERSION})"
        super().__init__(text)


@dataclass(frozen=True)
class Header:
    """Session header: what the receiver needs before it can render anything."""

    profile: str
    """Estimator/renderer pair, e.g. 'mesh' or 'fv2v'."""
    size: int
    """Codec resolution in pixels (square crop)."""
    fps: float
    """Nominal frame rate of the parameter stream."""
    n_expr: int
    """Number of expression coefficients per PARAMS packet."""
    steps: list[float]
    """Quantization steps (see codec.params.QuantSpec)."""
    model: str = ""
    """Identifier of the weights the sender uses ('' for model-free profiles)."""
    epoch_ms: int = 0
    """Sender wall clock (Unix ms) at capture_ms = 0: latency where clocks agree."""
    time_ms: int = 0
    """Sender capture clock (ms) when the header was sent: where PARAMS capture times unwrap from."""
    entropy: bytes = b""
    """The parameter stream's probability model (codec.entropy.Model.to_bytes); b'': the generic one."""


@dataclass(frozen=True)
class KeyframeChunk:
    """One piece of a keyframe message (split to fit data-channel messages)."""

    kf_id: int
    """Keyframe number, modulo 256."""
    index: int
    """Chunk index, 0-based."""
    count: int
    """Number of chunks of this keyframe."""
    data: bytes
    """The chunk bytes."""


@dataclass(frozen=True)
class Params:
    """Quantized motion of 1..entropy.MAX_BATCH consecutive frames (none when NO_FACE)."""

    capture_ms: int
    """Sender capture time of the first frame, ms since the session started (modulo 2**16 on the wire:
    decode() returns it modulo 2**16; the decoder unwraps it)."""
    kf_id: int
    """Keyframe the values are relative to (modulo 16 on the wire)."""
    flags: Flags = Flags.NONE
    """Frame flags (Flags)."""
    frames: tuple[np.ndarray, ...] = ()
    """Per frame, the quantized values (ints within +-127), pose first."""
    offsets_ms: tuple[int, ...] = ()
    """Per frame, its capture time minus the first frame's (0 for the first; empty: all 0)."""
    refs: tuple[tuple[int, ...], ...] = ()
    """Per frame (or one for all frames), the reference slot each region is drawn from (REF_REGIONS
    values, 0: the keyframe); empty: every region from the keyframe."""
    body: bytes = field(default=b"", compare=False)
    """The coded frames as received; decoded into frames only with the session's coder."""

    def frame_refs(self, i: int) -> tuple[int, ...]:
        """The reference slots of frame i (all 0 when none are named)."""
        if not self.refs:
            return (0,) * REF_REGIONS
        return self.refs[i] if len(self.refs) > 1 else self.refs[0]


@dataclass(frozen=True)
class ControlMessage:
    """Control message on the reliable channel."""

    code: Control
    """What is asked or said."""
    arg: int = 0
    """Code-specific integer."""


@dataclass(frozen=True)
class Reference:
    """A reference picture for the bank (the payload is a Keyframe message). The bank outlives
    keyframes: the picture is placed by its own landmarks."""

    kf_id: int
    """The sender's keyframe when it was sent, modulo 256 (a receiver that does not hold that one
    refuses it, and its acknowledgement names it)."""
    slot: int
    """Bank slot, 1..REF_SLOTS (it replaces what the slot held)."""
    regions: int
    """Bit mask of the regions it holds (bit i: region i)."""
    data: bytes
    """pack_keyframe(Keyframe(h264, aux)): the picture and its profile data; the H.264 is an intra
    picture or a P picture that follows keyframe kf_id's (codec.keyframe.decode with its base)."""


def ack_arg(kf_id: int, slot: int) -> int:
    """REFERENCE_ACK's argument."""
    return (kf_id % KF_MODULO) * 16 + slot


def parse_ack(arg: int) -> tuple[int, int]:
    """(kf_id, slot) of a REFERENCE_ACK's argument."""
    return (arg // 16) % KF_MODULO, arg % 16


Message = Header | KeyframeChunk | Params | ControlMessage | Reference


@dataclass(frozen=True)
class Keyframe:
    """The keyframe message, carried in KeyframeChunks: msgpack map {"h264": bytes, "aux": bytes}
    and, for a keyframe predicted from an earlier one, "base": int."""

    h264: bytes
    """One H.264 picture of the face crop, Annex B (codec.keyframe): an IDR picture, or a P picture
    that follows keyframe `base`."""
    aux: bytes = b""
    """The sender's profile data for this keyframe (Estimator.set_keyframe; b'' when none)."""
    base: int | None = None
    """The kf_id (modulo KF_MODULO) of the intra keyframe this one is predicted from; None: intra.
    Unused in a Reference, which follows its own kf_id."""


def pack_keyframe(kf: Keyframe) -> bytes:
    """The keyframe message's bytes, before split_keyframe()."""
    m: dict[str, object] = {"h264": kf.h264, "aux": kf.aux}
    if kf.base is not None:
        m["base"] = kf.base % KF_MODULO
    return msgpack.packb(m, use_bin_type=True)


def unpack_keyframe(payload: bytes) -> Keyframe:
    """Parse an assembled keyframe message; raises WireError when it is not one. Unknown keys are
    ignored (a newer sender may add some)."""
    try:
        m = msgpack.unpackb(payload, raw=False, max_bin_len=len(payload), max_map_len=8, max_array_len=8)
    except Exception:  # msgpack raises several unrelated types for bad input
        raise WireError("malformed keyframe: not msgpack") from None
    if not isinstance(m, dict) or not isinstance(m.get("h264"), bytes) or not isinstance(m.get("aux", b""), bytes):
        raise WireError("malformed keyframe: missing picture")
    base = m.get("base")
    if base is not None and (type(base) is not int or not 0 <= base < KF_MODULO):
        raise WireError("malformed keyframe: base is not a keyframe id")
    return Keyframe(m["h264"], m.get("aux", b""), base)


def type_tag(kind: Kind) -> int:
    """The first element of a message of this version and kind."""
    return (VERSION << 4) | int(kind)


def encode(msg: Message, coder: Coder | None = None) -> bytes:
    """One message's bytes; PARAMS with values need the session's coder."""
    if isinstance(msg, Params):
        return _encode_params(msg, coder)
    if isinstance(msg, KeyframeChunk):
        body = [type_tag(Kind.KEYFRAME), msg.kf_id % KF_MODULO, msg.index, msg.count, msg.data]
    elif isinstance(msg, ControlMessage):
        body = [type_tag(Kind.CONTROL), int(msg.code), int(msg.arg)]
    elif isinstance(msg, Reference):
        if len(msg.data) > KEYFRAME_CHUNK_BYTES:
            raise WireError(f"reference too large: {len(msg.data)} bytes")
        body = [type_tag(Kind.REFERENCE), msg.kf_id % KF_MODULO, msg.slot, msg.regions, msg.data]
    elif isinstance(msg, Header):
        body = [
            type_tag(Kind.HEADER),
            {
                "profile": msg.profile,
                "size": msg.size,
                "fps": float(msg.fps),
                "n_expr": msg.n_expr,
                "steps": [float(s) for s in msg.steps],
                "model": msg.model,
                "epoch_ms": int(msg.epoch_ms),
                "time_ms": int(msg.time_ms) % TIME_MODULO,
                "entropy": bytes(msg.entropy),
            },
        ]
    else:
        raise TypeError(f"cannot encode {type(msg).__name__}")
    return msgpack.packb(body, use_bin_type=True)


def _int(value: object, name: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise WireError(f"malformed packet: {name} out of range")
    return value


def _encode_params(msg: Params, coder: Coder | None) -> bytes:
    no_face = bool(msg.flags & Flags.NO_FACE)
    refs = _refs_bytes(msg) if not no_face else b""
    b0 = PARAMS_TAG | (msg.kf_id % PARAMS_KF_MODULO) << 2 | (PARAMS_NO_FACE_BIT if no_face else 0)
    b0 |= PARAMS_REFS_BIT if refs else 0
    head = bytes([b0]) + (msg.capture_ms % PARAMS_TIME_MODULO).to_bytes(2, "big")
    if no_face:
        return head
    if coder is None:
        raise ValueError("params with values need the session's coder")
    offsets = list(msg.offsets_ms) if msg.offsets_ms else [0] * len(msg.frames)
    return head + refs + coder.encode(list(msg.frames), offsets)


def _refs_bytes(msg: Params) -> bytes:
    """The references section: b'' when every frame draws everything from the keyframe."""
    per_frame = [msg.frame_refs(i) for i in range(len(msg.frames))]
    if not any(any(r) for r in per_frame):
        return b""
    for r in per_frame:
        if len(r) != REF_REGIONS or not all(0 <= s <= REF_SLOTS for s in r):
            raise ValueError(f"references: {REF_REGIONS} slots of 0..{REF_SLOTS} per frame")
    if all(r == per_frame[0] for r in per_frame):
        per_frame = per_frame[:1]
    return bytes([len(per_frame)] + [r[0] << 4 | r[1] for r in per_frame])


def is_params(data: bytes) -> bool:
    """Cheap peek: the first byte of a v2 PARAMS message."""
    return len(data) > 0 and data[0] & PARAMS_TAG_MASK == PARAMS_TAG


def decode(data: bytes, coder: Coder | None = None) -> Message:
    """Parse one message; raises WireError on anything that is not a valid v2 message. PARAMS frames
    are decoded with `coder` (the session's); without one they stay in Params.body."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireError("malformed packet: not binary")
    if len(data) == 0:
        raise WireError("malformed packet: empty")
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError(f"packet too large: {len(data)} bytes (limit {MAX_MESSAGE_BYTES})")
    if is_params(data):
        return _decode_params(bytes(data), coder)
    try:
        body = msgpack.unpackb(
            bytes(data),
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_bin_len=MAX_MESSAGE_BYTES,
            max_str_len=256,
            max_array_len=64,
            max_map_len=16,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise WireError(f"malformed packet: not msgpack ({type(exc).__name__})") from None
    if not isinstance(body, list) or not body or not isinstance(body[0], int) or isinstance(body[0], bool):
        raise WireError("malformed packet: no type tag")
    tv = body[0]
    version, kind = tv >> 4, tv & 0xF
    if version != VERSION or tv < 0:
        raise WireVersionError(version, kind)
    if kind == Kind.KEYFRAME:
        return _decode_chunk(body)
    if kind == Kind.CONTROL:
        return _decode_control(body)
    if kind == Kind.REFERENCE:
        return _decode_reference(body)
    if kind == Kind.HEADER:
        return _decode_header(body, len(data))
    raise WireError(f"malformed packet: unknown kind {kind}")


def _decode_params(data: bytes, coder: Coder | None) -> Params:
    if len(data) > MAX_PARAMS_BYTES:
        raise WireError(f"packet too large: {len(data)} bytes (limit {MAX_PARAMS_BYTES})")
    if len(data) < PARAMS_FIXED_BYTES:
        raise WireError("malformed packet: params truncated")
    b0 = data[0]
    kf, no_face = (b0 >> 2) & (PARAMS_KF_MODULO - 1), bool(b0 & PARAMS_NO_FACE_BIT)
    t = int.from_bytes(data[1:PARAMS_FIXED_BYTES], "big")
    body = data[PARAMS_FIXED_BYTES:]
    if no_face:
        if b0 & PARAMS_REFS_BIT:
            raise WireError("malformed packet: no-face params name references")
        if body:
            raise WireError("malformed packet: no-face params carry values")
        return Params(t, kf, Flags.NO_FACE)
    refs: tuple[tuple[int, ...], ...] = ()
    if b0 & PARAMS_REFS_BIT:
        count = body[0] if body else 0
        if not 1 <= count <= MAX_BATCH or len(body) < 1 + count:
            raise WireError("malformed packet: params references")
        refs = tuple((b >> 4, b & 0xF) for b in body[1 : 1 + count])
        body = body[1 + count :]
    if not body:
        raise WireError("malformed packet: params without values")
    if coder is None:
        return Params(t, kf, Flags.NONE, refs=refs, body=body)
    try:
        frames, offsets = coder.decode(body)
    except EntropyError as exc:
        raise WireError(str(exc)) from None
    if len(refs) > 1 and len(refs) != len(frames):
        raise WireError("malformed packet: params references for another number of frames")
    return Params(t, kf, Flags.NONE, tuple(frames), tuple(offsets), refs, body)


def _decode_chunk(body: list) -> KeyframeChunk:
    if len(body) != 5:
        raise WireError("malformed packet: keyframe needs 5 fields")
    kf = _int(body[1], "keyframe id", 0, KF_MODULO - 1)
    count = _int(body[3], "chunk count", 1, MAX_KEYFRAME_CHUNKS)
    index = _int(body[2], "chunk index", 0, count - 1)
    if not isinstance(body[4], bytes) or len(body[4]) > KEYFRAME_CHUNK_BYTES:
        raise WireError("malformed packet: keyframe chunk")
    return KeyframeChunk(kf, index, count, body[4])


def _decode_reference(body: list) -> Reference:
    if len(body) != 5:
        raise WireError("malformed packet: reference needs 5 fields")
    kf = _int(body[1], "keyframe id", 0, KF_MODULO - 1)
    slot = _int(body[2], "reference slot", 1, REF_SLOTS)
    regions = _int(body[3], "reference regions", 1, (1 << REF_REGIONS) - 1)
    if not isinstance(body[4], bytes) or len(body[4]) > KEYFRAME_CHUNK_BYTES:
        raise WireError("malformed packet: reference picture")
    return Reference(kf, slot, regions, body[4])


def _decode_control(body: list) -> ControlMessage:
    if len(body) != 3:
        raise WireError("malformed packet: control needs 3 fields")
    code = _int(body[1], "control code", 1, max(Control))
    return ControlMessage(Control(code), _int(body[2], "control argument", -1, 1 << 31))


def _decode_header(body: list, size: int) -> Header:
    if size > MAX_HEADER_BYTES:
        raise WireError(f"packet too large: {size} bytes (limit {MAX_HEADER_BYTES})")
    if len(body) != 2 or not isinstance(body[1], dict):
        raise WireError("malformed packet: header needs a map")
    h = body[1]
    profile, model, fps, steps = h.get("profile"), h.get("model", ""), h.get("fps"), h.get("steps")
    if not isinstance(profile, str) or not profile.isidentifier() or not isinstance(model, str):
        raise WireError("malformed header: profile")
    size_px = _int(h.get("size"), "size", 32, 2048)
    n_expr = _int(h.get("n_expr"), "expression size", 0, MAX_VALUES - 6)
    if not isinstance(fps, float | int) or isinstance(fps, bool) or not 0 < fps <= 240:
        raise WireError("malformed header: fps")
    if (
        not isinstance(steps, list)
        or len(steps) != 4
        or not all(isinstance(s, float | int) and not isinstance(s, bool) and 0 < s < 1e3 for s in steps)
    ):
        raise WireError("malformed header: steps")
    epoch = _int(h.get("epoch_ms", 0), "epoch", 0, 1 << 53)
    time_ms = _int(h.get("time_ms", 0), "header time", 0, TIME_MODULO - 1)
    model_bytes = h.get("entropy", b"")
    if not isinstance(model_bytes, bytes):
        raise WireError("malformed header: entropy model")
    return Header(profile, size_px, float(fps), n_expr, [float(s) for s in steps], model, epoch, time_ms, model_bytes)


def is_header(data: bytes) -> bool:
    """Cheap peek: does this message look like a HEADER (a fixarray whose first element is its tag), of
    this version or a past one (so an older caller reaches the decoder and gets its refusal)? For
    routing only; decode() still validates it."""
    return len(data) > 1 and 0x90 <= data[0] <= 0x9F and data[1] in _HEADER_TAGS


def past_bye(version: int) -> bytes | None:
    """A BYE in a past version's own framing ([(version << 4) | CONTROL, BYE, 0], the same in v1 to
    v3), so that its caller ends the call; None for a version this build never spoke."""
    if version not in PAST_VERSIONS:
        return None
    return msgpack.packb([(version << 4) | Kind.CONTROL, int(Control.BYE), 0])


def split_keyframe(kf_id: int, payload: bytes) -> list[KeyframeChunk]:
    count = max(1, -(-len(payload) // KEYFRAME_CHUNK_BYTES))
    if count > MAX_KEYFRAME_CHUNKS:
        raise WireError(f"keyframe too large: {len(payload)} bytes")
    return [
        KeyframeChunk(kf_id % KF_MODULO, i, count, payload[i * KEYFRAME_CHUNK_BYTES : (i + 1) * KEYFRAME_CHUNK_BYTES])
        for i in range(count)
    ]


class KeyframeAssembler:
    """Collects chunks; returns the payload once every chunk of the newest keyframe is in."""

    def __init__(self) -> None:
        self._kf_id: int | None = None
        self._chunks: dict[int, bytes] = {}
        self._count = 0

    @property
    def in_progress(self) -> int | None:
        """kf_id of the keyframe being collected, if any."""
        return self._kf_id

    def add(self, chunk: KeyframeChunk) -> bytes | None:
        if chunk.kf_id != self._kf_id or chunk.count != self._count:
            # A new keyframe replaces a half-received one.
            self._kf_id, self._count, self._chunks = chunk.kf_id, chunk.count, {}
        self._chunks[chunk.index] = chunk.data
        if len(self._chunks) < self._count:
            return None
        payload = b"".join(self._chunks[i] for i in range(self._count))
        self._kf_id, self._chunks, self._count = None, {}, 0
        return payload
