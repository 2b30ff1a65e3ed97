"""Data for training, fine-tuning and evaluating pose networks, in the MPII joint set.

Every labelled data set yields dicts of ``image`` (3, H, W) normalised with ``MEAN`` / ``STD``,
``heatmaps`` (16, h, w), ``joints`` (16, 2) in heatmap pixels, ``visible`` (16,), ``head_size``
() in heatmap pixels and ``index`` (unaugmented MPII samples also ``matrix``, their crop);
:class:`ImageFolder` yields ``image`` and ``index`` only.
"""

from tcompress.data.cache import SampleCache
from tcompress.data.factory import Materialized, make_dataset
from tcompress.data.figure import Figure, render_pose, sample_figure
from tcompress.data.images import IMAGE_EXTENSIONS, ImageFolder, read_crop, read_image, write_image
from tcompress.data.mpii import MPIIDataset
from tcompress.data.skeleton import FLIP_PAIRS, FLIP_PERMUTATION, JOINTS, N_JOINTS, PARENTS
from tcompress.data.synthetic import SyntheticConfig, SyntheticPose
from tcompress.data.targets import default_sigma, gaussian_heatmaps
from tcompress.data.transforms import MEAN, STD, denormalize, flip_heatmaps, flip_joints, normalize

__all__ = [
    "FLIP_PAIRS",
    "Figure",
    "Materialized",
    "FLIP_PERMUTATION",
    "IMAGE_EXTENSIONS",
    "JOINTS",
    "MEAN",
    "N_JOINTS",
    "PARENTS",
    "STD",
    "SampleCache",
    "ImageFolder",
    "MPIIDataset",
    "SyntheticConfig",
    "SyntheticPose",
    "default_sigma",
    "denormalize",
    "flip_heatmaps",
    "flip_joints",
    "gaussian_heatmaps",
    "make_dataset",
    "normalize",
    "read_crop",
    "read_image",
    "render_pose",
    "sample_figure",
    "write_image",
]
