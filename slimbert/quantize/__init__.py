"""Quantization, one home for every path: ONNX Runtime post-training quantization
(``onnx_ptq``, with ``calibration``, ``fp8_qdq`` and the accuracy repair ``onnx_repair``),
PyTorch PT2E (``torch_ptq``: torchao's x86 quantizer in ``torchao_x86``, Intel Neural
Compressor in ``inc``), and quantization-aware training (``qat``). The settings live in
``config`` (no heavy imports); the accuracy-driven fallback every path uses lives in
``fallback``.
"""
