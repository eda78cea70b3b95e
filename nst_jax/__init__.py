"""nst_jax: neural style transfer in JAX.

The data flows one way: image files -> arrays (``image``) -> VGG19 features (``vgg``) ->
losses (``losses``) -> objective (``objective``) -> optimiser (``optimize``) -> files.
"""

from nst_jax import conv, memory, optimize, sweeps
from nst_jax.image import (
    CAFFE,
    TORCHVISION,
    Preprocessing,
    demo_images,
    labelled_grid,
    load_image,
    preprocess,
    read_settings,
    resize,
    resize_longest,
    save_image,
)
from nst_jax.losses import content_loss, gram, gram_loss, total_variation
from nst_jax.objective import LossConfig, Targets, Terms, features, make_targets
from nst_jax.optimize import (
    Config,
    Result,
    initial_image,
    invert,
    make_optimizer,
    stylize,
    stylize_batch,
    stylize_pyramid,
    synthesize,
    transfer,
)
from nst_jax.vgg import LAYERS, VGG19, init_params
from nst_jax.weights import Weights
from nst_jax.weights import load as load_weights

__version__ = "0.1.0"

__all__ = [
    "CAFFE",
    "LAYERS",
    "TORCHVISION",
    "VGG19",
    "Config",
    "LossConfig",
    "Preprocessing",
    "Result",
    "Targets",
    "Terms",
    "Weights",
    "content_loss",
    "conv",
    "demo_images",
    "features",
    "gram",
    "gram_loss",
    "initial_image",
    "invert",
    "labelled_grid",
    "init_params",
    "load_image",
    "load_weights",
    "make_optimizer",
    "make_targets",
    "memory",
    "optimize",
    "preprocess",
    "read_settings",
    "resize",
    "resize_longest",
    "save_image",
    "stylize",
    "stylize_batch",
    "stylize_pyramid",
    "sweeps",
    "synthesize",
    "total_variation",
    "transfer",
]
