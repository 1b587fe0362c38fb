"""Exporters: PyTorch classifier folders to ONNX, and ONNX graph quantization."""
