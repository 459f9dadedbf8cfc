"""Free view: keys change the offsets, and the decoder renders the newest packet with them."""

from __future__ import annotations

import numpy as np
import pytest
from test_codec import RecordingRenderer, _params, _session

from peer.view import MAX_DEG, STEP_DEG, FreeView


def test_keys_change_and_clamp_the_view() -> None:
    view = FreeView()
    assert view.key(ord("l")) and view.yaw == STEP_DEG
    assert view.key(ord("i")) and view.pitch == STEP_DEG
    assert view.key(ord("u")) and view.roll == -STEP_DEG
    for _ in range(50):
        view.key(ord("j"))
    assert view.yaw == -MAX_DEG
    assert not view.key(-1) and not view.key(ord("x"))
    assert view.key(ord("0")) and (view.yaw, view.pitch, view.roll) == (0.0, 0.0, 0.0)


def test_view_is_added_to_the_senders_rotation_and_redraws() -> None:
    dec, renderer, msgs = _session()
    assert isinstance(renderer, RecordingRenderer)
    for m in msgs:
        dec.receive(m)
    dec.receive(_params(2))  # yaw = pitch = roll = 2 steps of 0.5 degrees
    dec.render()
    view = FreeView(yaw=10.0)
    view.attach(dec)
    assert dec.pending()  # a view change redraws the newest packet without a new one
    dec.render()
    view.key(ord("k"))
    dec.render()
    first, turned, nodded = renderer.rendered
    assert (first.yaw, first.pitch, first.roll) == (1.0, 1.0, 1.0)
    assert (turned.yaw, turned.pitch, turned.roll) == (11.0, 1.0, 1.0)
    assert (nodded.yaw, nodded.pitch) == (11.0, 1.0 - STEP_DEG)
    assert np.allclose(turned.expression, first.expression)


@pytest.mark.parametrize("code", [ord("l") | 0x100000, ord("l")])
def test_modifier_bits_are_ignored(code: int) -> None:
    view = FreeView()
    assert view.key(code) and view.yaw == STEP_DEG
