"""Neural style transfer from the command line: ``python run.py --help``.

  python run.py --content photo.jpg --style painting.jpg --output out.png
  python run.py --demo            # built-in sample images, writes demo.png

The flags, their mapping onto frozen configs and the one library call per mode live in
``nst_jax/cli.py``, so that the installed ``nst-jax`` command and ``python -m nst_jax``
are this same program.
"""

from nst_jax.cli import run

if __name__ == "__main__":
    run()
