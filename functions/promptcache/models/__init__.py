"""Weights trained by this project: ``verifier.onnx`` (see adapters/local_verifier.py)."""
