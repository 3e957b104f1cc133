"""The TensorRT INT8 route: ``model.int8.onnx``, explicit symmetric Q/DQ with FP16 elsewhere, built strongly typed.

- ``ptq``: ModelOpt post-training quantization from the calibration frames (``quantize_int8``);
- ``sensitivity``: which quantized nodes cost most, for the FP16 fallback (``--int8-fallback``);
- ``qat``, ``qdq_torch``: quantization-aware fine-tune of the Q/DQ graph itself (``--qat``);
- ``qdq_check``: the structural check that TensorRT accepts the Q/DQ graph;
- ``steps``: the route in order (PTQ → fallback → QAT → keep), as ``export`` runs it (``build_int8``).

The CPU route (ONNX Runtime's integer kernels, ``model.int8.cpu.onnx``) is ``edge_affect.export.cpu_int8``.
"""
