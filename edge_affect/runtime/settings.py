"""The face pipeline's settings, checked by the same schema as the configs (``edge_affect.validation``).

``FacePipeline(max_faces=0)``, ``detect_every=2.5`` or ``roi_size=10**6`` are one-line ``ValueError``s naming
the setting and its range, the same ranges ``run``/``bench``/``serve`` check when they parse their options.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictFloat, StrictInt

from edge_affect.validation import Settings, validate

#: Face detector input sizes (long side, px) accepted for whole frames and regions.
DET_SIZE_RANGE = (32, 4096)
#: Most frames between two whole-frame detections.
MAX_DETECT_EVERY = 1000

_Size = Annotated[StrictInt, Field(ge=DET_SIZE_RANGE[0], le=DET_SIZE_RANGE[1])]


class PipelineSettings(Settings):
    """What ``FacePipeline`` accepts besides its predictor and detector."""

    smooth: StrictBool = True
    alpha: Annotated[StrictFloat, Field(gt=0, le=1)] = 0.4
    label_margin: Annotated[StrictFloat, Field(ge=0, lt=1)] = 0.1
    track: StrictBool = True
    max_faces: Annotated[StrictInt, Field(ge=1)] | None = None
    det_size: _Size = 640
    detect_every: Annotated[StrictInt, Field(ge=1, le=MAX_DETECT_EVERY)] = 10
    track_policy: Literal["roi", "carry"] = "roi"
    roi_size: _Size | None = None
    roi_pad: Annotated[StrictFloat, Field(ge=0)] = 2.0
    pickup: Literal["motion", "none"] = "motion"
    hold: StrictBool = True
    filter_landmarks: StrictBool = True
    fps: Annotated[StrictFloat, Field(gt=0)] = 30.0
    views: Annotated[StrictInt, Field(ge=1, le=4)] | None = None


def check_pipeline_settings(pipeline: Any, where: str = "FacePipeline") -> None:
    """Refuse (one-line ``ValueError``) a setting of ``pipeline`` (its attributes named as here) of the wrong
    type or out of range."""
    values = {k: getattr(pipeline, k) for k in PipelineSettings.model_fields if hasattr(pipeline, k)}
    validate(PipelineSettings, values, where)
