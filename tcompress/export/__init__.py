"""Exported models: ONNX files and measurements of them."""
