"""The motion gate that picks up new faces between detections: change maps and uncovered regions."""

from __future__ import annotations

import numpy as np
import pytest

from edge_affect.runtime.motion import MotionGate


def _frame(seed: int = 0, noise: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.full((480, 640, 3), 100.0)
    base[100:200, 300:400] = 180.0  # a static object
    if noise:
        base += rng.normal(0.0, noise, base.shape)
    return np.clip(base, 0, 255).astype(np.uint8)


def test_first_frame_has_no_change_map() -> None:
    g = MotionGate()
    assert g.update(_frame()) is None
    assert g.update(_frame()).shape == (60, 80)


def test_sensor_noise_is_not_motion() -> None:
    """Per-pixel noise σ = 4 gray levels, averaged over 8×8 cells: no cell passes the threshold of 12."""
    g = MotionGate()
    g.update(_frame(0, 4.0))
    changed = g.update(_frame(1, 4.0))
    assert int(changed.sum()) == 0
    assert g.uncovered(changed, (640, 480), []) is None


def test_new_object_outside_the_covers_is_reported_in_frame_pixels() -> None:
    g = MotionGate()
    a = _frame()
    b = a.copy()
    b[304:368, 496:544] = 30  # 48×64 px appears
    g.update(a)
    changed = g.update(b)
    assert int(changed.sum()) == 6 * 8  # exactly the cells it fills (its edges lie on the 8-px grid)
    assert g.uncovered(changed, (640, 480), []) == (496, 304, 544, 368)
    # Inside a tracked face's region (plus one cell of margin) it is explained, not new.
    assert g.uncovered(changed, (640, 480), [np.array([500.0, 310.0, 540.0, 360.0])]) is None
    # A cover elsewhere leaves it reported.
    assert g.uncovered(changed, (640, 480), [np.array([0.0, 0.0, 100.0, 100.0])]) == (496, 304, 544, 368)


def test_small_flicker_below_min_cells_is_ignored() -> None:
    g = MotionGate(min_cells=4)
    a = _frame()
    b = a.copy()
    b[0:16, 0:8] = 255  # two cells
    g.update(a)
    assert g.uncovered(g.update(b), (640, 480), []) is None


def test_frame_size_change_restarts_the_reference() -> None:
    g = MotionGate()
    g.update(_frame())
    assert g.update(np.zeros((240, 320, 3), np.uint8)) is None


@pytest.mark.parametrize("kw", [{"cell": 0}, {"threshold": 0.0}, {"min_cells": 0}])
def test_settings_are_checked(kw: dict) -> None:
    with pytest.raises(ValueError, match="motion gate"):
        MotionGate(**kw)
