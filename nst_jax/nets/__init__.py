"""The frozen feature network: VGG19 in Flax (``vgg``), its convolution algorithms
(``conv``), the same network in strips for a lean backward pass (``remat``), its
weights with the preprocessing they expect (``weights``), and the prepared ``Network``
a run passes to its compiled programs (``network``); and the feed-forward generators
trained against it (``generator``)."""

from nst_jax.nets import generator
from nst_jax.nets.generator import GeneratorConfig
from nst_jax.nets.network import CONVOLUTIONS, NetConfig, Network, prepare
from nst_jax.nets.vgg import CONV_LAYERS, LAYERS, VGG19, Layer, init_params, layer
from nst_jax.nets.weights import CAFFE, TORCHVISION, Preprocessing, Weights, preprocess

__all__ = [
    "CAFFE",
    "CONVOLUTIONS",
    "CONV_LAYERS",
    "GeneratorConfig",
    "LAYERS",
    "TORCHVISION",
    "VGG19",
    "Layer",
    "NetConfig",
    "Network",
    "Preprocessing",
    "Weights",
    "generator",
    "init_params",
    "layer",
    "prepare",
    "preprocess",
]
