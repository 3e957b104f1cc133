"""Moved to :mod:`edge_affect.export.tensorrt_int8.sensitivity` (the TensorRT INT8 route's package); this name stays for one release."""

import sys

from edge_affect.export.tensorrt_int8 import sensitivity as _moved

sys.modules[__name__] = _moved
