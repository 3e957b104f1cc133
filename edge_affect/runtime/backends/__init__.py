"""Backends behind one runner contract: ONNX Runtime, TensorRT, PyTorch (reference). Heavy imports are lazy."""
