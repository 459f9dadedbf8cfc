"""Keyframe refresh driven by the rendering error the sender measures (codec.refresh)."""

from __future__ import annotations

import numpy as np

from codec.refresh import ErrorMonitor, RefreshPolicy
from models.types import FrameParams

SIZE = 64
FPS = 25.0


class StillRenderer:
    """Shows the keyframe, whatever the parameters (a receiver's picture that cannot follow)."""

    def __init__(self) -> None:
        self.image: np.ndarray | None = None

    def set_keyframe(self, image: np.ndarray, aux: bytes) -> None:
        if aux == b"bad":
            raise ValueError("bad aux")
        self.image = image

    def render(self, params: FrameParams) -> np.ndarray:
        assert self.image is not None
        return self.image


def scene(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(60, 190, (SIZE, SIZE, 3), dtype=np.uint8)


def drive(monitor: ErrorMonitor, frames: list[np.ndarray]) -> list[tuple[float, str]]:
    """Feed frames at FPS (keyframe = frames[0] at t=0); refreshes are applied like the encoder does."""
    reasons = []
    monitor.keyframe(frames[0], b"", 0.0)
    for i, f in enumerate(frames[1:], 1):
        t = i / FPS
        why = monitor.check(f, FrameParams(), t)
        if why is not None:
            reasons.append((t, why))
            monitor.keyframe(f, b"", t)
    return reasons


def noisy(image: np.ndarray, rng: np.random.Generator, sigma: float = 6.0) -> np.ndarray:
    return np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)


def test_a_steady_picture_is_never_refreshed() -> None:
    rng = np.random.default_rng(1)
    base = scene()
    frames = [noisy(base, rng) for _ in range(int(10 * FPS))]  # 10 s of camera noise on a still scene
    assert drive(ErrorMonitor(StillRenderer()), frames) == []


def test_a_lighting_change_held_refreshes_once_after_the_hold() -> None:
    rng = np.random.default_rng(2)
    base = scene()
    lit = np.clip(base.astype(int) + 45, 0, 255).astype(np.uint8)  # the light goes on at 3 s
    frames = [noisy(base if i < 3 * FPS else lit, rng) for i in range(int(8 * FPS))]
    policy = RefreshPolicy()
    reasons = drive(ErrorMonitor(StillRenderer(), policy), frames)
    assert len(reasons) == 1, reasons  # the new keyframe shows the new light: no second refresh
    t, why = reasons[0]
    assert 3.0 + policy.hold_s <= t <= 3.0 + policy.hold_s + 3 * policy.check_every / FPS, reasons
    assert why.startswith("rendering error:")


def test_a_short_disturbance_and_an_early_one_are_not_refreshed() -> None:
    rng = np.random.default_rng(3)
    base, other = scene(), scene(9)
    policy = RefreshPolicy()
    # A hand passes for 0.6 s (< hold): no keyframe.
    frames = [noisy(other if 3 * FPS <= i < 3.6 * FPS else base, rng) for i in range(int(6 * FPS))]
    assert drive(ErrorMonitor(StillRenderer(), policy), frames) == []
    # A change at 1.2 s, held: the refresh waits for min_interval_s after the keyframe at the latest.
    frames = [noisy(other if i >= 1.2 * FPS else base, rng) for i in range(int(6 * FPS))]
    reasons = drive(ErrorMonitor(StillRenderer(), policy), frames)
    assert len(reasons) == 1 and reasons[0][0] >= policy.min_interval_s, reasons


def test_a_keyframe_the_renderer_refuses_is_not_measured() -> None:
    monitor = ErrorMonitor(StillRenderer())
    monitor.keyframe(scene(), b"bad", 0.0)
    assert all(monitor.check(scene(5), FrameParams(), i / FPS) is None for i in range(1, 200))
    assert monitor.check_ms == []


def test_the_encoder_refreshes_on_a_lighting_change_of_a_real_render() -> None:
    """The mesh profile end to end: the embedded sample clip brightens at 2 s and stays bright."""
    from codec import driver
    from codec.decoder import FaceDecoder
    from codec.encoder import FaceEncoder
    from codec.profiles import sample_frames

    frames_iter, fps = sample_frames(5.0)
    frames = list(frames_iter)
    lit = [f if i < 2 * fps else np.clip(f.astype(int) + 50, 0, 255).astype(np.uint8) for i, f in enumerate(frames)]
    for clip, expect in ((frames, 0), (lit, 1)):
        enc = FaceEncoder("mesh", 128, fps)
        clock = driver.TickClock()
        for _ in driver.run(clip, enc, FaceDecoder(clock=clock), fps, clock=clock):
            pass
        enc.close()
        assert enc.stats.error_refreshes == expect, enc.events
        assert enc.monitor is not None and enc.monitor.check_ms
