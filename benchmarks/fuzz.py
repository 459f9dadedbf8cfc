"""Fuzz the packet decoder: mutated golden fixtures plus random near-valid msgpack, 100k+ cases.

    python benchmarks/fuzz.py --cases 100000 --seed 1

A crash is any exception other than WireError from codec.wire.decode, and any exception at
all from FaceDecoder.receive (or poll/render right after). Crashing inputs are written to
--out (default: nowhere) and the script exits 1 when there is any.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import msgpack
import numpy as np

from codec import wire
from codec.decoder import FaceDecoder
from codec.fuzzing import SIZE, fuzz_coder, fuzz_session, mutate

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "golden"
DEFAULT_CASES = 100_000
STRUCTURED_SHARE = 0.4  # share of cases built as near-valid msgpack, the rest mutate the corpus
RESET_EVERY = 5_000  # a fresh session now and then: state reached by earlier cases varies
HANG_S = 1.0  # one case taking more CPU time than this counts as a hang


def session() -> tuple[FaceDecoder, list[bytes]]:
    return fuzz_session(face_lost=True)


def value(rng: np.random.Generator, depth: int = 0) -> object:
    r = int(rng.integers(0, 10 if depth < 2 else 7))
    if r == 0:
        return int(rng.integers(-3, 300))
    if r == 1:
        return int(rng.integers(-(2**63), 2**63 - 1))
    if r == 2:
        return bytes(rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8))
    if r == 3:
        return "".join(chr(int(c)) for c in rng.integers(32, 0x2FF, int(rng.integers(0, 20))))
    if r == 4:
        return float(rng.choice([np.nan, np.inf, -np.inf, 0.0, 1e308, float(rng.normal() * 100)]))
    if r == 5:
        return None
    if r == 6:
        return bool(rng.integers(0, 2))
    if r == 7:
        return [value(rng, depth + 1) for _ in range(int(rng.integers(0, 6)))]
    if r == 8:
        return {str(value(rng, 2))[:8]: value(rng, depth + 1) for _ in range(int(rng.integers(0, 6)))}
    return {
        "profile": rng.choice(["mesh", "fv2v", "", "1x"]),
        "size": int(rng.integers(-1, 5000)),
        "fps": value(rng, 2),
        "n_expr": int(rng.integers(-1, 300)),
        "steps": [float(rng.uniform(-1, 2000)) for _ in range(int(rng.integers(0, 6)))],
    }


MODEL = fuzz_coder().model.to_bytes()


def fuzz_mutate_model(rng: np.random.Generator) -> bytes:
    """The session's entropy model with a few bytes changed, cut or added."""
    return mutate(rng, MODEL, [MODEL])


HEADER, KEYFRAME, CONTROL = (wire.type_tag(k) for k in (wire.Kind.HEADER, wire.Kind.KEYFRAME, wire.Kind.CONTROL))
# kinds without a field generator here, kinds this version lacks, past versions' tags, non-tags
OTHER_TAGS = [
    wire.VERSION << 4,
    wire.type_tag(wire.Kind.REFERENCE),
    (wire.VERSION << 4) | 0xF,
    0x11,
    0x13,
    0x21,
    0x01,
    -1,
    255,
]


def near_valid(rng: np.random.Generator) -> bytes:
    kind = int(rng.integers(0, 5))
    if kind == 0:  # binary PARAMS: a tag byte, a 16-bit time, a range-coded body
        tag = 0x40 | int(rng.integers(0, 64)) if rng.random() < 0.8 else int(rng.integers(0, 256))
        return bytes([tag]) + bytes(rng.integers(0, 256, int(rng.integers(0, 40)), dtype=np.uint8))
    if kind == 1:
        body = [
            KEYFRAME,
            int(rng.integers(-1, 300)),
            int(rng.integers(-1, 200)),
            int(rng.integers(-1, 200)),
            value(rng),
        ]
    elif kind == 2:
        body = [CONTROL, int(rng.integers(-2, 6)), int(rng.integers(-(2**40), 2**40))]
    elif kind == 3:
        near = {
            "profile": "mesh",
            "size": SIZE,
            "fps": value(rng, 2),
            "n_expr": int(rng.integers(-1, 5)),
            "steps": [float(rng.uniform(-1, 2)) for _ in range(int(rng.integers(3, 6)))],
            "time_ms": int(rng.integers(-1, 2**33)),
            "entropy": MODEL if rng.random() < 0.5 else fuzz_mutate_model(rng),
        }
        body = [HEADER, value(rng) if rng.random() < 0.3 else near]
    else:
        body = [
            int(rng.choice(OTHER_TAGS)),
            *[value(rng) for _ in range(int(rng.integers(0, 7)))],
        ]
    if rng.random() < 0.3:
        body = body[:-1] if rng.random() < 0.5 else [*body, value(rng)]
    return msgpack.packb(body, use_bin_type=bool(rng.integers(0, 2)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=DEFAULT_CASES)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, help="folder for crashing inputs")
    a = ap.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    dec, valid = session()
    corpus = [p.read_bytes() for p in sorted(GOLDEN.glob("*.bin"))] + valid
    crashes: list[tuple[str, bytes, str]] = []
    counts = {"wire_error": 0, "decoded": 0, "structured": 0, "mutated": 0}
    coder = fuzz_coder()
    slowest, slowest_wall, hangs = 0.0, 0.0, 0
    t0 = time.perf_counter()
    for i in range(a.cases):
        if i % RESET_EVERY == 0 and i:
            dec, _ = session()
        structured = rng.random() < STRUCTURED_SHARE
        counts["structured" if structured else "mutated"] += 1
        data = near_valid(rng) if structured else mutate(rng, corpus[int(rng.integers(0, len(corpus)))], corpus)
        t_case, cpu_case = time.perf_counter(), time.process_time()
        try:
            wire.decode(data, coder)
            counts["decoded"] += 1
        except wire.WireError:
            counts["wire_error"] += 1
        except Exception:
            crashes.append(("wire.decode", data, traceback.format_exc(limit=3)))
        try:
            dec.receive(data)
            dec.poll()
            if dec.pending():
                dec.render()
        except Exception:
            crashes.append(("FaceDecoder", data, traceback.format_exc(limit=3)))
        # CPU time, not wall time: on a shared machine a starved process is not a hang.
        case_s = time.process_time() - cpu_case
        slowest, slowest_wall = max(slowest, case_s), max(slowest_wall, time.perf_counter() - t_case)
        hangs += case_s > HANG_S
    dt = time.perf_counter() - t0
    print(
        f"fuzz: {a.cases} cases in {dt:.1f} s ({a.cases / dt:.0f}/s): {counts['structured']} structured, "
        f"{counts['mutated']} mutated; wire.decode accepted {counts['decoded']}, rejected "
        f"{counts['wire_error']} with WireError; decoder bad packets {dec.stats.bad_packets} (last session)"
    )
    print(
        f"fuzz: {len(crashes)} crashes, {hangs} hangs (over {HANG_S:g} s CPU); slowest case {slowest * 1000:.1f} ms "
        f"CPU, {slowest_wall * 1000:.0f} ms wall"
    )
    for where, data, tb in crashes[:5]:
        print(f"  {where}: {data[:40].hex()}...\n{tb}")
    if crashes and a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        for n, (_, data, _) in enumerate(crashes):
            (a.out / f"crash_{n:04d}.bin").write_bytes(data)
    return 1 if crashes or hangs else 0


if __name__ == "__main__":
    sys.exit(main())
