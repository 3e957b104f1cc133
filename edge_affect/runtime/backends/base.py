"""The runner contract every backend follows (Polygraphy style).

A runner is a context manager around one loaded network: ``activate()`` allocates (session, engine,
buffers), ``infer(dict[str, ndarray]) -> dict[str, ndarray]`` runs it, ``deactivate()`` frees it.
Runners know nothing about faces or labels: the :class:`~edge_affect.runtime.predictor.Predictor`
and the YuNet detector put meaning on top of the same contract.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (``-1`` or a string for a dynamic dimension) and numpy dtype of one I/O tensor."""

    name: str
    shape: tuple[int | str, ...]
    dtype: np.dtype

    def static_dim(self, axis: int) -> int | None:
        """The size of ``axis`` if it is fixed, else ``None``."""
        d = self.shape[axis] if axis < len(self.shape) else None
        return d if isinstance(d, int) and d > 0 else None


class BaseRunner:
    """Context manager + ``infer`` contract; subclasses implement ``_activate``/``_deactivate``/``_infer``."""

    #: short backend name used in reports and JSON ("onnxruntime", "tensorrt", "torch").
    backend: str = "base"

    def __init__(self, name: str) -> None:
        self.name = name
        self.is_active = False
        #: What actually runs the network (e.g. "CPUExecutionProvider", "NVIDIA Orin", "cpu").
        self.device: str = ""
        self.inputs: dict[str, TensorSpec] = {}
        self.outputs: dict[str, TensorSpec] = {}
        #: Largest batch one ``infer`` call accepts (``None`` = unbounded).
        self.max_batch: int | None = None

    # -- contract --------------------------------------------------------------------------------
    def activate(self) -> BaseRunner:
        if not self.is_active:
            self._activate()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            try:
                self._deactivate()
            finally:
                self.is_active = False

    def __enter__(self) -> BaseRunner:
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def __del__(self) -> None:  # pragma: no cover - best effort release
        try:
            self.deactivate()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the network on named inputs and return named outputs (numpy, host memory)."""
        if not self.is_active:
            raise RuntimeError(f"{self.name}: runner is not active (use it as a context manager or call activate())")
        missing = set(self.inputs) - set(feed)
        if missing:
            raise ValueError(f"{self.name}: missing inputs {sorted(missing)}; expected {sorted(self.inputs)}")
        return self._infer(feed)

    def warmup(self, iters: int = 2, batch: int = 1) -> None:
        """Run a few zero inputs so the first real call pays no one-off costs."""
        feed = {}
        for spec in self.inputs.values():
            shape = [
                batch if i == 0 and spec.static_dim(0) is None else (spec.static_dim(i) or 1)
                for i in range(len(spec.shape))
            ]
            feed[spec.name] = np.zeros(shape, dtype=spec.dtype)
        for _ in range(max(iters, 1)):
            self.infer(feed)

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary: backend, device actually used, tensors."""
        return {
            "backend": self.backend,
            "device": self.device,
            "inputs": {k: list(v.shape) for k, v in self.inputs.items()},
            "outputs": {k: list(v.shape) for k, v in self.outputs.items()},
            "max_batch": self.max_batch,
        }

    # -- to implement ----------------------------------------------------------------------------
    def _activate(self) -> None:
        raise NotImplementedError

    def _deactivate(self) -> None:
        raise NotImplementedError

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError
