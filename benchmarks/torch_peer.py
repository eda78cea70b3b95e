"""The PyTorch peer of ``time_to_quality.py``: Gatys et al. as a PyTorch user writes it
from the PyTorch tutorial, as its own process, so its wall time counts everything a user
waits for (imports, weights, the run, the file).

  python benchmarks/torch_peer.py CONTENT STYLE OUTPUT --size 256 [--evals 100]

- the same VGG19 weights as nst_jax (the Caffe file, read with NumPy), max pooling;
- content at conv4_2 (MSE), Gram style at conv1_1 ... conv5_1 (``G = FFᵀ / (CHW)``, MSE),
  the tutorial's weights (content 1, style 1e6);
- ``torch.optim.LBFGS`` with the strong Wolfe line search, history 100, from the content,
  for ``--evals`` objective evaluations.

It imports nothing from nst_jax, so its time is a PyTorch user's.
"""

from __future__ import annotations

import argparse
import time

T0 = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
ORDER = [
    f"conv{b}_{i}" for b, n in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4)) for i in range(1, n + 1)
]
STYLE = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
CONTENT = "conv4_2"


def load(path, size=None, shape=None):
    im = Image.open(path).convert("RGB")
    if shape is not None:
        im = im.resize((shape[1], shape[0]), Image.LANCZOS)
    else:
        w, h = im.size
        s = size / max(w, h)
        im = im.resize((round(w * s), round(h * s)), Image.LANCZOS)
    return torch.from_numpy(np.asarray(im, np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("content")
    p.add_argument("style")
    p.add_argument("output")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--evals", type=int, default=100)
    p.add_argument("--weights", default="weights/vgg19_caffe.npz")
    args = p.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    with np.load(args.weights) as z:  # Plain arrays; no pickle.
        convs = {}
        for name in ORDER[: ORDER.index("conv5_1") + 1]:
            kernel = np.ascontiguousarray(z[f"{name}/kernel"].transpose(3, 2, 0, 1))
            convs[name] = (torch.from_numpy(kernel), torch.from_numpy(z[f"{name}/bias"]))
    mean = torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)

    def features(img):
        x = img.flip(1) * 255.0 - mean
        out = {}
        for name, (w, b) in convs.items():
            if name.endswith("_1") and name != "conv1_1":
                x = F.max_pool2d(x, 2)
            x = torch.relu(F.conv2d(x, w, b, padding=1))
            if name in STYLE or name == CONTENT:
                out[name] = x
        return out

    def gram(f):
        _, c, h, w = f.shape
        m = f.view(c, h * w)
        return m @ m.t() / (c * h * w)

    content = load(args.content, size=args.size)
    style = load(args.style, size=args.size)
    with torch.no_grad():
        target_c = features(content)[CONTENT]
        target_s = {k: gram(v) for k, v in features(style).items() if k in STYLE}
    image = content.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [image], lr=1, max_iter=args.evals, max_eval=args.evals, history_size=100,
        line_search_fn="strong_wolfe", tolerance_grad=0, tolerance_change=0,
    )  # fmt: skip
    evals = [0]

    def closure():
        opt.zero_grad()
        f = features(image)
        loss = F.mse_loss(f[CONTENT], target_c) + 1e6 * sum(
            F.mse_loss(gram(f[k]), target_s[k]) for k in STYLE
        )
        loss.backward()
        evals[0] += 1
        return loss

    opt.step(closure)
    out = image.detach().clamp(0, 1)[0].permute(1, 2, 0).numpy()
    Image.fromarray((out * 255 + 0.5).astype(np.uint8)).save(args.output)
    print(f"evals {evals[0]} wall {time.perf_counter() - T0:.1f}s")


if __name__ == "__main__":
    main()
