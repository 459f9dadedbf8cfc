"""A decoder session to fuzz: a renderer that checks its inputs and draws nothing, and the valid
messages that set the session up (the seed corpus of tests/test_fuzz.py and benchmarks/fuzz.py)."""

from __future__ import annotations

import numpy as np

from codec import keyframe, wire
from codec.decoder import FaceDecoder
from codec.encoder import pack_keyframe
from codec.params import POSE_SIZE, FrameParams, QuantSpec
from models.face import CropBox

SIZE = 32  # codec resolution of the fuzzed session: small keeps keyframe decodes cheap
N_EXPR = 2


class NullRenderer:
    """A renderer that checks what it gets, like a real one would rely on."""

    def set_keyframe(self, image: np.ndarray, aux: bytes) -> None:
        if image.shape != (SIZE, SIZE, 3):
            raise ValueError("keyframe size")

    def render(self, params: FrameParams) -> np.ndarray:
        assert len(params.expression) == N_EXPR and np.all(np.isfinite(params.vector()))
        return np.zeros((SIZE, SIZE, 3), np.uint8)


def null_renderer(h: wire.Header) -> NullRenderer:
    """Renderer factory: only the session fuzz_session() announces can render."""
    if h.profile != "mesh" or h.size != SIZE:
        raise ValueError(f"cannot render {h.profile} at {h.size}")
    return NullRenderer()


def fuzz_session(face_lost: bool = False) -> tuple[FaceDecoder, list[bytes]]:
    """A decoder with a header and a keyframe in place, and the valid messages that set it up
    (ending with a FACE_LOST control message when face_lost)."""
    dec = FaceDecoder(renderer_factory=null_renderer)
    image = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    kf = pack_keyframe(keyframe.encode(image), b"", CropBox(0, 0, SIZE))
    msgs = [wire.encode(wire.Header("mesh", SIZE, 25.0, N_EXPR, QuantSpec().to_list()))]
    msgs += [wire.encode(c) for c in wire.split_keyframe(0, kf)]
    msgs += [wire.encode(wire.Params(1, 40, 0, wire.Flags.NONE, np.zeros(POSE_SIZE + N_EXPR, np.int8)))]
    if face_lost:
        msgs += [wire.encode(wire.ControlMessage(wire.Control.FACE_LOST, 1))]
    for m in msgs:
        dec.receive(m)
    dec.render()
    return dec, msgs
