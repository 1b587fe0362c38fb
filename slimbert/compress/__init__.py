"""Compression stages on the PyTorch side: fine-tuning, distillation."""
