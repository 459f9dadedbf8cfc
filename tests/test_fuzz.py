"""Fuzzing the packet decoder: structured near-valid msgpack (hypothesis) and a mutated golden corpus.

A crash is any exception other than WireError from codec.wire.decode, and any exception at
all from FaceDecoder.receive (or from the render that follows). benchmarks/fuzz.py runs the
same idea at 100k+ cases; this is the ~2k-case version for every test run.
"""

from __future__ import annotations

from pathlib import Path

import msgpack
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codec import entropy, wire
from codec.decoder import FaceDecoder
from codec.fuzzing import N_EXPR, fuzz_coder, fuzz_session, mutate
from codec.params import QuantSpec

GOLDEN = Path(__file__).resolve().parent / "golden"
HYPOTHESIS_CASES = 200
MUTATION_CASES = 2000
MUTATION_SEED = 1234


def session() -> tuple[FaceDecoder, list[bytes]]:
    """A decoder with a header and a keyframe in place, and the valid messages that set it up."""
    return fuzz_session()


CODER = fuzz_coder()


def check(dec: FaceDecoder, data: bytes) -> None:
    for coder in (None, CODER):
        try:
            wire.decode(data, coder)
        except wire.WireError as exc:
            assert "\n" not in str(exc) and str(exc)
    dec.receive(data)
    dec.poll()
    if dec.pending():
        dec.render()


THIS = wire.VERSION << 4
# every kind of this version, kinds it lacks, past versions' headers and chunks, non-tags
TAGS = st.sampled_from([THIS | k for k in range(6)] + [THIS | 0xF, 0x11, 0x13, 0x21, 0x22, 0x01, -1, 255, 2**40])
SCALARS = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.integers(-3, 300),
    st.binary(max_size=300),
    st.text(max_size=40),
    st.floats(allow_nan=True),
    st.none(),
    st.booleans(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=8), inner, max_size=6)),
    max_leaves=12,
)
HEADER_MAPS = st.fixed_dictionaries(
    {
        "profile": st.sampled_from(["mesh", "fv2v", "", "1x", "mesh" * 70]),
        "size": st.integers(-1, 5000),
        "fps": st.one_of(st.floats(allow_nan=True), st.integers(-5, 500)),
        "n_expr": st.integers(-1, 300),
        "steps": st.lists(st.floats(-1, 2000), max_size=6),
    },
    optional={
        "model": VALUES,
        "epoch_ms": st.integers(-1, 2**64 - 1),
        "time_ms": st.integers(-1, 2**33),
        "entropy": st.one_of(st.binary(max_size=300), VALUES),
    },
)


@st.composite
def near_valid(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["params", "chunk", "reference", "control", "header", "any"]))
    if kind == "params":  # binary: tag byte, 16-bit time, range-coded body
        tag = 0x40 | draw(st.integers(0, 63)) if draw(st.booleans()) else draw(st.integers(0, 255))
        return bytes([tag]) + draw(st.binary(min_size=0, max_size=40))
    if kind == "chunk":
        count = draw(st.integers(-1, 200))
        body = [
            wire.type_tag(wire.Kind.KEYFRAME),
            draw(st.integers(-1, 300)),
            draw(st.integers(-1, 200)),
            count,
            draw(st.one_of(st.binary(max_size=64), VALUES)),
        ]
    elif kind == "reference":
        body = [
            wire.type_tag(wire.Kind.REFERENCE),
            draw(st.integers(-1, 300)),
            draw(st.integers(-1, 17)),
            draw(st.integers(-1, 5)),
            draw(st.one_of(st.binary(max_size=64), VALUES)),
        ]
    elif kind == "control":
        body = [wire.type_tag(wire.Kind.CONTROL), draw(st.integers(-2, 6)), draw(st.integers(-(2**40), 2**40))]
    elif kind == "header":
        body = [wire.type_tag(wire.Kind.HEADER), draw(st.one_of(HEADER_MAPS, VALUES))]
    else:
        body = [draw(TAGS), *draw(st.lists(VALUES, max_size=7))]
    if draw(st.booleans()):  # drop or add a field
        body = body[:-1] if draw(st.booleans()) else [*body, draw(VALUES)]
    return msgpack.packb(body, use_bin_type=draw(st.booleans()))


@settings(max_examples=HYPOTHESIS_CASES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.lists(near_valid(), min_size=1, max_size=4))
def test_structured_near_valid_messages_never_crash(data: list[bytes]) -> None:
    dec, _ = session_cached()
    for d in data:
        check(dec, d)


def valid_session_held_a_reference(valid: list[bytes]) -> bool:
    """The seed corpus includes a reference picture and frames that name it (the fuzzer starts there)."""
    fresh, _ = session()
    kinds = [wire.decode(m) for m in valid]
    return (
        fresh.stats.references == 1
        and any(isinstance(k, wire.Reference) for k in kinds)
        and any(isinstance(k, wire.Params) and k.refs for k in kinds)
    )


_SESSION: list[tuple[FaceDecoder, list[bytes]]] = []


def session_cached() -> tuple[FaceDecoder, list[bytes]]:
    if not _SESSION:
        _SESSION.append(session())
    return _SESSION[0]


def test_mutated_golden_corpus_never_crashes() -> None:
    dec, valid = session()
    corpus = [p.read_bytes() for p in sorted(GOLDEN.glob("*.bin"))] + valid
    assert len(corpus) >= 5
    rng = np.random.default_rng(MUTATION_SEED)
    for _ in range(MUTATION_CASES):
        check(dec, mutate(rng, corpus[int(rng.integers(0, len(corpus)))], corpus))
    assert dec.stats.bad_packets > MUTATION_CASES // 4
    assert valid_session_held_a_reference(valid)
    # After all that, the session still works: a valid packet renders.
    dec.receive(wire.encode(wire.Params(60000, 0, wire.Flags.NONE, (np.ones(6 + N_EXPR, np.int64),)), CODER))
    assert dec.header is not None


def test_unknown_profile_header_is_reported_not_raised() -> None:
    dec = FaceDecoder(renderer_factory=lambda h: (_ for _ in ()).throw(RuntimeError("no weights for fv2v")))
    replies = dec.receive(wire.encode(wire.Header("fv2v", 256, 25.0, 0, QuantSpec().to_list())))
    assert dec.error == "no weights for fv2v" and dec.header is None
    assert [wire.decode(r.data) for r in replies] == [wire.ControlMessage(wire.Control.BYE, 0)]
    coder = entropy.Coder(entropy.generic(0), QuantSpec(), 25.0)
    assert dec.receive(wire.encode(wire.Params(1, 0, wire.Flags.NONE, (np.zeros(6, np.int64),)), coder)) == []
