"""Model rewrites. Each pass takes a model and returns a new one (the input is left untouched) that
computes the same function in eval mode, checked in the tests against the model it came from:

- :func:`materialize`: a T-Net becomes the plain dense hourglass, kernels rebuilt from the tensor;
- :func:`factorize`: a T-Net becomes plain convolutions in the three-convolution form;
- :func:`fold_batchnorm`: every BatchNorm is folded into the convolution before it;
- :func:`decompose_layers` (:mod:`tcompress.passes.layerwise`): a dense network becomes a
  :class:`~tcompress.layerwise.LayerwiseNet`, every convolution of its kernel family decomposed on
  its own (the same function up to the truncation; exactly the same at full rank).

:mod:`tcompress.passes.data_aware` fits a T-Net's shared tensor (or a layer-wise network's chains)
in place so that every block convolution's output on some images stays close to the original's:
the conversion's optional refinement step, which changes the function on purpose.
"""

from tcompress.passes.factorize import factorize
from tcompress.passes.fold_bn import ChannelAffine, fold_batchnorm
from tcompress.passes.layerwise import LayerwiseConfig, decompose_layers
from tcompress.passes.materialize import materialize

__all__ = [
    "ChannelAffine",
    "LayerwiseConfig",
    "decompose_layers",
    "factorize",
    "fold_batchnorm",
    "materialize",
]
