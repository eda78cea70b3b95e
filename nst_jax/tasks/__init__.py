"""What a user asks for, on arrays, one mode a module: ``stylize`` (one image or a
vmapped batch), ``pyramid`` (coarse to fine), ``texture``, ``invert``, ``sweeps``
(grids). Each decides its run's policy once (``policy``: the convolution algorithm,
memory) and hands a batch to the driver. The package's top level exports their
functions."""
