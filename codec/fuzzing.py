"""Fuzzing the receiver: a decoder session with a renderer that checks its inputs and draws nothing,
the valid messages that set it up (the seed corpus), and the byte mutator; shared by
tests/test_fuzz.py and benchmarks/fuzz.py."""

from __future__ import annotations

import numpy as np

from codec import entropy, keyframe, wire
from codec.decoder import FaceDecoder
from codec.params import POSE_SIZE, FrameParams, QuantSpec

SIZE = 32  # codec resolution of the fuzzed session: small keeps keyframe decodes cheap
N_EXPR = 2
MAX_MUTATIONS = 4  # edits per mutated message
INTERESTING = [0x00, 0x7F, 0x80, 0xFF, 0xC1, 0xC6, 0xDC, 0xDD, 0xDE, 0x93, 0x95]
INTERESTING += [wire.type_tag(k) for k in wire.Kind] + [0x21, 0x22]  # this version's tags, v2's
INTERESTING += [0x40, 0x41, 0x42, 0x13, 0x0F, 0x10]


class NullRenderer:
    """A renderer that checks what it gets, like a real one would rely on."""

    def set_keyframe(self, image: np.ndarray, aux: bytes) -> None:
        if image.shape != (SIZE, SIZE, 3):
            raise ValueError("keyframe size")

    def add_reference(self, slot: int, image: np.ndarray, aux: bytes, regions: int) -> None:
        if image.shape != (SIZE, SIZE, 3) or not 1 <= slot <= wire.REF_SLOTS or not 0 < regions < 4:
            raise ValueError("reference")

    def render(self, params: FrameParams) -> np.ndarray:
        assert len(params.expression) == N_EXPR and np.all(np.isfinite(params.vector()))
        assert all(0 <= s <= wire.REF_SLOTS for s in params.references)
        return np.zeros((SIZE, SIZE, 3), np.uint8)


def null_renderer(h: wire.Header) -> NullRenderer:
    """Renderer factory: only the session fuzz_session() announces can render."""
    if h.profile != "mesh" or h.size != SIZE:
        raise ValueError(f"cannot render {h.profile} at {h.size}")
    return NullRenderer()


def fuzz_coder() -> entropy.Coder:
    """The parameter coder of the fuzzed session (generic model): to build and check PARAMS."""
    return entropy.Coder(entropy.generic(N_EXPR), QuantSpec(), 25.0)


def fuzz_session(face_lost: bool = False) -> tuple[FaceDecoder, list[bytes]]:
    """A decoder with a header and a keyframe in place, and the valid messages that set it up
    (ending with a FACE_LOST control message when face_lost)."""
    dec = FaceDecoder(renderer_factory=null_renderer)
    image = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    kf = wire.pack_keyframe(wire.Keyframe(keyframe.encode(image)))
    coder = fuzz_coder()
    header = wire.Header("mesh", SIZE, 25.0, N_EXPR, QuantSpec().to_list(), entropy=coder.model.to_bytes())
    msgs = [wire.encode(header)]
    msgs += [wire.encode(c) for c in wire.split_keyframe(0, kf)]
    values = np.arange(POSE_SIZE + N_EXPR) - 3
    msgs += [wire.encode(wire.Params(40, 0, wire.Flags.NONE, (values, values + 1), (0, 40)), coder)]
    msgs += [wire.encode(wire.Params(120, 0, wire.Flags.NONE, (values,)), coder)]
    msgs += [wire.encode(wire.Reference(0, 1, 2, kf))]  # a reference picture for the mouth, slot 1
    msgs += [wire.encode(wire.Params(140, 0, wire.Flags.NONE, (values, values), (0, 40), ((0, 1), (1, 1))), coder)]
    msgs += [wire.encode(wire.Params(160, 0, wire.Flags.NO_FACE))]
    if face_lost:
        msgs += [wire.encode(wire.ControlMessage(wire.Control.FACE_LOST, 1))]
    for m in msgs:
        dec.receive(m)
    dec.render()
    return dec, msgs


def mutate(rng: np.random.Generator, data: bytes, corpus: list[bytes], max_ops: int = MAX_MUTATIONS) -> bytes:
    """`data` with 1..max_ops random byte-level edits: bit flips, interesting bytes, inserts, deletes,
    truncation, splices with another corpus message, and huge msgpack length fields."""
    b = bytearray(data)
    for _ in range(int(rng.integers(1, max_ops + 1))):
        op = int(rng.integers(0, 7))
        pos = int(rng.integers(0, len(b) + 1))
        if op == 0 and b:  # flip a bit
            b[pos % len(b)] ^= 1 << int(rng.integers(0, 8))
        elif op == 1 and b:  # a byte that means something to msgpack or to our type tags
            b[pos % len(b)] = int(rng.choice(INTERESTING))
        elif op == 2:
            b[pos:pos] = bytes(rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8))
        elif op == 3 and b:
            del b[pos : pos + int(rng.integers(1, 9))]
        elif op == 4:
            b = b[:pos]
        elif op == 5:  # splice with another message
            other = corpus[int(rng.integers(0, len(corpus)))]
            b = b[:pos] + other[int(rng.integers(0, len(other) + 1)) :]
        else:  # a huge length field (bin32)
            b[pos:pos] = bytes([0xC6]) + int(rng.integers(0, 2**32)).to_bytes(4, "big")
    return bytes(b)
