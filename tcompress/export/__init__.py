"""Exported models: ONNX files (:mod:`.onnx`), their validation against PyTorch (:mod:`.validate`)
and their measurement in ONNX Runtime (:mod:`.bench`)."""
