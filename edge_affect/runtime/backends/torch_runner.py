"""PyTorch checkpoint runner: the reference the other backends are compared with.

torch and the model code are imported only when this runner is activated, so the runtime package
stays torch-free for everyone who does not ask for this backend.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edge_affect.runtime.backends.base import BaseRunner, TensorSpec
from edge_affect.schema import INPUT_NAME, OUTPUT_DIMS

log = logging.getLogger(__name__)


def import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise RuntimeError("the torch backend needs PyTorch: pip install 'edge-affect[train]'") from None
    return torch


class TorchRunner(BaseRunner):
    """Runs ``edge_affect.models`` checkpoints (or an in-memory model) in eager PyTorch."""

    backend = "torch"

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        *,
        model: Any = None,
        meta: Any = None,
        device: str = "cpu",
        half: bool = False,
    ) -> None:
        super().__init__(str(checkpoint) if checkpoint is not None else "torch-model")
        if checkpoint is None and model is None:
            raise ValueError("TorchRunner needs a checkpoint path or a model")
        self._checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.model = model
        self.meta = meta
        self._device_name = device
        self.half = half

    def _activate(self) -> None:
        torch = self._torch = import_torch()
        if self.model is None:
            if not self._checkpoint.is_file():
                raise FileNotFoundError(f"checkpoint {self._checkpoint} does not exist")
            from edge_affect.models import load_checkpoint

            self.model, self.meta = load_checkpoint(self._checkpoint)
        if not isinstance(self._device_name, str):
            raise ValueError(f"torch device {self._device_name!r:.40} must be a string such as 'cpu' or 'cuda:0'")
        if self._device_name.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"torch device {self._device_name!r} requested but no CUDA GPU is visible to PyTorch")
        try:
            self._dev = torch.device(self._device_name)
        except RuntimeError:
            raise ValueError(
                f"torch device {self._device_name!r} is not a device name (expected cpu, cuda, cuda:N)"
            ) from None
        self.model = self.model.eval().to(self._dev)
        if self.half:
            self.model = self.model.half()
        self.device = str(self._dev)
        size = self.meta.preprocess.input_size if self.meta is not None else -1
        self.inputs = {INPUT_NAME: TensorSpec(INPUT_NAME, ("N", 3, size, size), np.dtype(np.float32))}
        self.outputs = {k: TensorSpec(k, ("N", v), np.dtype(np.float32)) for k, v in OUTPUT_DIMS.items()}

    def _deactivate(self) -> None:
        pass

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(feed[INPUT_NAME], dtype=np.float32)).to(self._dev)
        if self.half:
            x = x.half()
        with torch.inference_mode():
            out = self.model(x)
        return {k: v.float().cpu().numpy() for k, v in out.items()}
