"""nst_jax: neural style transfer in JAX.

The data flows one way: image files -> arrays (``image``, ``color``) -> VGG19 features
(``nets``) -> losses (``losses``) -> objective (``objective``) -> solver (``solve``) ->
tasks (``tasks``) -> files (``jobs``, behind the command line, ``cli``).
"""

import time as _time

IMPORT_STARTED = _time.perf_counter()  # --report counts the package's imports from here.

from nst_jax import (
    batch,
    checkpoint,
    color,
    config,
    data,
    feedforward,
    folders,
    grid,
    hosts,
    jobs,
    losses,
    memory,
    nets,
    objective,
    solve,
    tasks,
)
from nst_jax.batch import stylize_many
from nst_jax.config import Config
from nst_jax.folders import FolderJob, stylize_folder
from nst_jax.grid import labelled_grid
from nst_jax.image import (
    demo_images,
    load_image,
    load_mask,
    read_settings,
    resize,
    resize_longest,
    save_image,
)
from nst_jax.inputs import Inputs
from nst_jax.jobs import Job, Outputs, invert_files, stylize_files, texture_files
from nst_jax.losses import content_loss, gram, gram_loss, total_variation
from nst_jax.nets import (
    CAFFE,
    LAYERS,
    TORCHVISION,
    VGG19,
    GeneratorConfig,
    NetConfig,
    Network,
    Preprocessing,
    Weights,
    init_params,
    prepare,
    preprocess,
)
from nst_jax.nets.weights import load_weights
from nst_jax.objective import LossConfig, Targets, Terms, content_targets, style_targets
from nst_jax.solve import Result, transfer
from nst_jax.tasks import sweeps
from nst_jax.tasks.invert import invert
from nst_jax.tasks.pyramid import pyramid_sizes, stylize_pyramid
from nst_jax.tasks.stylize import stylize, stylize_batch
from nst_jax.tasks.texture import synthesize
from nst_jax.tasks.train import TrainConfig, train_generator
from nst_jax.tasks.trained import apply_generator, load_generator
from nst_jax.version import __version__

__all__ = [
    "CAFFE",
    "LAYERS",
    "TORCHVISION",
    "VGG19",
    "Config",
    "FolderJob",
    "GeneratorConfig",
    "Inputs",
    "Job",
    "LossConfig",
    "NetConfig",
    "Network",
    "Outputs",
    "Preprocessing",
    "Result",
    "TrainConfig",
    "Targets",
    "Terms",
    "Weights",
    "__version__",
    "batch",
    "color",
    "config",
    "content_loss",
    "content_targets",
    "demo_images",
    "gram",
    "gram_loss",
    "grid",
    "hosts",
    "init_params",
    "invert",
    "invert_files",
    "jobs",
    "labelled_grid",
    "load_image",
    "load_mask",
    "load_weights",
    "losses",
    "memory",
    "nets",
    "checkpoint",
    "data",
    "feedforward",
    "folders",
    "objective",
    "prepare",
    "preprocess",
    "pyramid_sizes",
    "read_settings",
    "resize",
    "resize_longest",
    "save_image",
    "solve",
    "style_targets",
    "stylize",
    "stylize_batch",
    "stylize_files",
    "stylize_folder",
    "stylize_many",
    "train_generator",
    "apply_generator",
    "load_generator",
    "stylize_pyramid",
    "sweeps",
    "synthesize",
    "tasks",
    "texture_files",
    "total_variation",
    "transfer",
]
