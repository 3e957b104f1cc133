"""Faces in raw frames (compatibility module): the face pipeline's parts live in their own modules.

``detect`` (YuNet), ``align`` (5-point similarity alignment, crop template), ``track`` (IoU tracks with
motion, EMA smoothing) and ``pipeline`` (``FacePipeline``: detect every N frames, track in between).
Existing imports from ``edge_affect.runtime.faces`` keep working through the names below.
"""

from __future__ import annotations

from edge_affect.runtime.align import ARCFACE_TEMPLATE_112, align_face, measure_align_template, similarity_transform
from edge_affect.runtime.detect import (
    YUNET_ALIGN,
    YUNET_DIR,
    YUNET_MAX_SIDE,
    YUNET_ONNX,
    YUNET_STRIDES,
    Detection,
    YuNetDetector,
    min_face_px,
    yunet_runner,
)
from edge_affect.runtime.pipeline import (
    RECORD_FIELDS,
    STATUS_BAD_CROP,
    STATUS_BAD_FRAME,
    STATUS_NO_FACE,
    FacePipeline,
    output_record,
)
from edge_affect.runtime.track import EMASmoother, IoUTracker, iou_xywh

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "RECORD_FIELDS",
    "STATUS_BAD_CROP",
    "STATUS_BAD_FRAME",
    "STATUS_NO_FACE",
    "YUNET_ALIGN",
    "YUNET_DIR",
    "YUNET_MAX_SIDE",
    "YUNET_ONNX",
    "YUNET_STRIDES",
    "Detection",
    "EMASmoother",
    "FacePipeline",
    "IoUTracker",
    "YuNetDetector",
    "align_face",
    "iou_xywh",
    "measure_align_template",
    "min_face_px",
    "output_record",
    "similarity_transform",
    "yunet_runner",
]
