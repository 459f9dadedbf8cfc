"""Named landmark groups of MediaPipe's refined face mesh (478 points, irises last).

"Right" and "left" are the person's own: the right eye is on the image's left.
"""

from __future__ import annotations

import numpy as np

RIGHT_BROW = np.array([70, 63, 105, 66, 107, 55, 65, 52, 53, 46])
LEFT_BROW = np.array([300, 293, 334, 296, 336, 285, 295, 282, 283, 276])
RIGHT_EYE = np.array([33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246])
LEFT_EYE = np.array([263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466])
RIGHT_IRIS = np.arange(468, 473)  # centre, then 4 rim points
LEFT_IRIS = np.arange(473, 478)
RIGHT_UPPER_LID = np.array([246, 161, 160, 159, 158, 157, 173])
LEFT_UPPER_LID = np.array([466, 388, 387, 386, 385, 384, 398])
RIGHT_LOWER_LID = np.array([7, 163, 144, 145, 153, 154, 155])
LEFT_LOWER_LID = np.array([249, 390, 373, 374, 380, 381, 382])
LIPS = np.array(
    [
        61,
        146,
        91,
        181,
        84,
        17,
        314,
        405,
        321,
        375,
        291,
        185,
        40,
        39,
        37,
        0,
        267,
        269,
        270,
        409,
        78,
        95,
        88,
        178,
        87,
        14,
        317,
        402,
        318,
        324,
        308,
        191,
        80,
        81,
        82,
        13,
        312,
        311,
        310,
        415,
    ]
)
INNER_LIPS = np.array([78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415])

GROUPS: dict[str, np.ndarray] = {
    "brows": np.concatenate([RIGHT_BROW, LEFT_BROW]),
    "eyes": np.concatenate([RIGHT_EYE, LEFT_EYE]),
    "irises": np.concatenate([RIGHT_IRIS, LEFT_IRIS]),
    "mouth": LIPS,
}
"""Feature groups that expression quality is reported on."""


def eye_openness(lm: np.ndarray) -> float:
    """Mean lid gap over eye width of both eyes (dimensionless)."""
    gaps = []
    for upper, lower, corners in ((159, 145, (33, 133)), (386, 374, (263, 362))):
        width = np.linalg.norm(lm[corners[0], :2] - lm[corners[1], :2]) + 1e-9
        gaps.append(np.linalg.norm(lm[upper, :2] - lm[lower, :2]) / width)
    return float(np.mean(gaps))
