"""The frozen feature network: VGG19 in Flax (``vgg``), its convolution algorithms
(``conv``), the same network in strips for a lean backward pass (``remat``), its
weights with the preprocessing they expect (``weights``), and the prepared ``Network``
a run passes to its compiled programs (``network``)."""

from nst_jax.nets.network import CONVOLUTIONS, NetConfig, Network, prepare
from nst_jax.nets.vgg import CONV_LAYERS, LAYERS, VGG19, Layer, init_params, layer
from nst_jax.nets.weights import CAFFE, TORCHVISION, Preprocessing, Weights, preprocess

__all__ = [
    "CAFFE",
    "CONVOLUTIONS",
    "CONV_LAYERS",
    "LAYERS",
    "TORCHVISION",
    "VGG19",
    "Layer",
    "NetConfig",
    "Network",
    "Preprocessing",
    "Weights",
    "init_params",
    "layer",
    "prepare",
    "preprocess",
]
