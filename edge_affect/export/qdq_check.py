"""Moved to :mod:`edge_affect.export.tensorrt_int8.qdq_check` (the TensorRT INT8 route's package); this name stays for one release."""

import sys

from edge_affect.export.tensorrt_int8 import qdq_check as _moved

sys.modules[__name__] = _moved
