"""Free view: the receiver turns the caller's head to a view of its choosing, live."""

from __future__ import annotations

from dataclasses import dataclass

from codec.api import Decoder

STEP_DEG = 5.0  # one key press
MAX_DEG = 45.0
# key -> (axis index, direction): letters, which every window backend reports the same way.
KEYS = {ord("j"): (0, -1), ord("l"): (0, 1), ord("i"): (1, 1), ord("k"): (1, -1), ord("u"): (2, -1), ord("o"): (2, 1)}
RESET_KEY = ord("0")


@dataclass
class FreeView:
    """(yaw, pitch, roll) offsets in degrees, pushed to the decoder of the current call."""

    yaw: float = 0.0
    """Added head yaw, degrees."""
    pitch: float = 0.0
    """Added head pitch, degrees."""
    roll: float = 0.0
    """Added head roll, degrees."""
    _decoder: Decoder | None = None

    def attach(self, decoder: Decoder) -> None:
        self._decoder = decoder
        self._push()

    def key(self, code: int) -> bool:
        """Apply a key press (j/l yaw, i/k pitch, u/o roll, 0 reset); True when the view changed."""
        if code < 0:
            return False
        code &= 0xFF  # some backends add modifier bits
        if code == RESET_KEY:
            self.yaw = self.pitch = self.roll = 0.0
        elif code in KEYS:
            axis, sign = KEYS[code]
            values = [self.yaw, self.pitch, self.roll]
            values[axis] = max(-MAX_DEG, min(MAX_DEG, values[axis] + sign * STEP_DEG))
            self.yaw, self.pitch, self.roll = values
        else:
            return False
        self._push()
        return True

    def _push(self) -> None:
        if self._decoder is not None:
            self._decoder.set_view(self.yaw, self.pitch, self.roll)
