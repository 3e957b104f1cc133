"""Process pools for the decode/render workers (numpy + OpenCV only, no torch in the children)."""

from __future__ import annotations

import multiprocessing as mp
import sys
from multiprocessing.context import BaseContext


def pool_context() -> BaseContext:
    """``fork`` on Linux (no re-import of the caller's ``__main__`` and torch per worker, as torch's
    own DataLoader does), ``spawn`` elsewhere."""
    if sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods():
        return mp.get_context("fork")
    return mp.get_context("spawn")
