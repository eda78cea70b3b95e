"""``python -m nst_jax.nets.fetch``: fetch, verify and convert the default VGG19 weights
ahead of time (the first run does the same)."""

from __future__ import annotations

import sys

from nst_jax.nets import weights


def main() -> int:
    try:
        loaded = weights.load_weights(progress=True)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    path = weights.cache_dir() / weights.NPZ_NAME
    print(f"VGG19 weights ready in {path} (source sha256 {loaded.sha256})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
