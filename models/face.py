"""Face finding, cropping and landmarks (MediaPipe face detection and face mesh).

Landmarks are returned in pixel coordinates of the image given, z scaled like x
(MediaPipe's z is relative to the image width), shape (478, 3) float32: the 468 points of
the face mesh, then the 10 iris points of MediaPipe's refined mesh (468-472 right iris
centre and rim, 473-477 left), so gaze is tracked like any other landmark.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from models.native import quiet_native_stderr

N_MESH_LANDMARKS = 468  # the face mesh proper
N_IRIS_LANDMARKS = 10  # centre + 4 rim points per eye (refine_landmarks=True)
N_LANDMARKS = N_MESH_LANDMARKS + N_IRIS_LANDMARKS
CROP_FACE_SCALE = 2.0  # crop side / detected face box side: head, hair and shoulders fit
MIN_DETECTION_CONFIDENCE = 0.5
MIN_TRACKING_CONFIDENCE = 0.5

os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ start-up chatter
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _mediapipe() -> Any:  # the mediapipe module
    with quiet_native_stderr():
        import mediapipe as mp  # heavy import: only where faces are needed
    return mp


@dataclass(frozen=True)
class CropBox:
    """A square region of the source frame; may extend past its borders (padded)."""

    x0: int
    """Left edge, source pixels."""
    y0: int
    """Top edge, source pixels."""
    side: int
    """Side length, source pixels."""

    def to_list(self) -> list[int]:
        return [self.x0, self.y0, self.side]

    def center(self) -> tuple[float, float]:
        return self.x0 + self.side / 2, self.y0 + self.side / 2


def crop(frame: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """Cut box out of frame (edge-replicated where it leaves the frame), resized to size."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = box.x0, box.y0, box.x0 + box.side, box.y0 + box.side
    pad = max(0, -x0, -y0, x1 - w, y1 - h)
    if pad:
        frame = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    region = frame[y0:y1, x0:x1]
    interp = cv2.INTER_AREA if box.side > size else cv2.INTER_LINEAR
    return cv2.resize(region, (size, size), interpolation=interp)


def box_around(
    cx: float, cy: float, face_side: float, frame_shape: tuple[int, ...], scale: float = CROP_FACE_SCALE
) -> CropBox:
    """Square box of scale * face_side centred on the face, kept inside the frame if it fits."""
    h, w = frame_shape[:2]
    side = int(round(min(max(face_side * scale, 32), max(h, w))))
    x0 = int(round(cx - side / 2))
    y0 = int(round(cy - side / 2 + 0.1 * side))  # a little lower: shoulders, not sky
    if side <= w:
        x0 = min(max(x0, 0), w - side)
    if side <= h:
        y0 = min(max(y0, 0), h - side)
    return CropBox(x0, y0, side)


class FaceDetector:
    """Whole-frame face detection: where to crop."""

    def __init__(self) -> None:
        mp = _mediapipe()
        with quiet_native_stderr():
            self._det = mp.solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=MIN_DETECTION_CONFIDENCE
            )
            self._det.process(np.zeros((64, 64, 3), np.uint8))  # start the graph now, quietly

    def find(self, frame: np.ndarray) -> CropBox | None:
        """Crop box around the most confident face of an RGB frame, or None."""
        h, w = frame.shape[:2]
        res = self._det.process(np.ascontiguousarray(frame))
        if not res.detections:
            return None
        best = max(res.detections, key=lambda d: d.score[0])
        bb = best.location_data.relative_bounding_box
        fw, fh = bb.width * w, bb.height * h
        return box_around(bb.xmin * w + fw / 2, bb.ymin * h + fh / 2, max(fw, fh), frame.shape)

    def close(self) -> None:
        self._det.close()


class FaceMesh:
    """478 refined face-mesh landmarks (irises included) of the (single) face in an image."""

    def __init__(self, video: bool = True) -> None:
        # video=True tracks between calls (faster, smoother); False treats each image alone.
        mp = _mediapipe()
        with quiet_native_stderr():
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=not video,
                max_num_faces=1,
                refine_landmarks=True,
                min_detection_confidence=MIN_DETECTION_CONFIDENCE,
                min_tracking_confidence=MIN_TRACKING_CONFIDENCE,
            )
            self._mesh.process(np.zeros((64, 64, 3), np.uint8))  # start the graph now, quietly
        self._quiet = True

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """(478, 3) float32 pixel coordinates, or None when no face is found."""
        h, w = image.shape[:2]
        if self._quiet:  # the landmark model starts (and logs) on the first face it sees
            with quiet_native_stderr():
                res = self._mesh.process(np.ascontiguousarray(image))
            self._quiet = not res.multi_face_landmarks
        else:
            res = self._mesh.process(np.ascontiguousarray(image))
        if not res.multi_face_landmarks:
            return None
        lm = res.multi_face_landmarks[0].landmark
        pts = np.array([(p.x, p.y, p.z) for p in lm[:N_LANDMARKS]], dtype=np.float32)
        return pts * np.array([w, h, w], dtype=np.float32)

    def close(self) -> None:
        self._mesh.close()
