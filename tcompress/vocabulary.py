"""The enumerations the library checks and the command line offers as choices, torch-free.

One definition each: the library validates against these tuples and the CLI builds its
``click.Choice`` from them, so a value is never spelled twice. Method names are the registry's
(:func:`tcompress.methods.names`, also torch-free).

Two of them share the word ``factorized``: a T-Net's *forward form* (how PyTorch runs it: the
shared tensor rebuilt, or its factors run as small convolutions) and an *export form* (what the
ONNX file holds: the small convolutions, or dense kernels). A factorized export of a T-Net runs
its factorized forward form's convolutions, so the word means the same network in both.
"""

from __future__ import annotations

#: How a T-Net runs in PyTorch (``forward=``, ``--forward``).
FORWARD_FORMS = ("reconstructed", "factorized")
#: What an ONNX export holds (``form=``, ``tcompress export --form``).
EXPORT_FORMS = ("factorized", "dense")
#: The arithmetic of an exported file (``precision=``, ``tcompress export --precision``).
EXPORT_PRECISIONS = ("fp32", "fp16", "int8")
#: The file an export writes: ONNX, or ONNX Runtime's mobile format (``format=``, ``--format``).
FILE_FORMATS = ("onnx", "ort")
#: Optimizers of fine-tuning and training (``--optimizer``).
OPTIMIZERS = ("rmsprop", "adam", "sgd")
#: Learning-rate schedules (``--schedule``).
SCHEDULES = ("step", "cosine", "linear")
#: Training precisions (``--precision``).
PRECISIONS = ("fp32", "bf16")
#: Data set splits (``--split``): training, a validation split for every choice (ranks,
#: learning rates, recipes), a test split only for reported figures. The synthetic splits draw
#: from disjoint generator keys; MPII-style data: the official validation entries are the test
#: split, and the validation split is held out of the training entries
#: (:data:`~tcompress.data.mpii.HELD_OUT`).
SPLITS = ("train", "val", "test")
#: Sub-pixel refinements of heatmap peaks (``decode_heatmaps(refine=)``).
REFINEMENTS = ("none", "quarter", "quadratic")

#: A float32 export passes when max |ONNX - PyTorch| <= FP32_ATOL + FP32_RTOL * max |PyTorch|.
#: Correct exports of every method, both forms, the small, bundled and paper configurations
#: measured at <= 0.52 of it (worst: the bundled hourglass at 256x256, 1.3e-6 on outputs of 0.2);
#: a BatchNorm fold that drops eps at >= 1.8x it (running variances near 1; 4.5x with the bundled
#: model's, 660x with variances of 1e-3..1e-2): ``benchmarks/bench_shared_factors.py``,
#: ``docs/records/shared_factors.json``.
FP32_ATOL = 1e-6
FP32_RTOL = 1e-5
