"""Neural style transfer in JAX. ``python run.py --helpfull`` lists every flag.

python run.py --content photo.jpg --style painting.jpg --output out.png
python run.py --demo                               # built-in images: demo.png
python run.py --mode texture --style painting.jpg  # a texture from the style alone
python run.py --mode invert --content photo.jpg --layer conv4_1
python run.py --content 'photos/*.jpg' --style painting.jpg --output_dir styled/
python run.py --mode train --demo                  # a feed-forward generator, once
python run.py --mode apply --demo                  # then one pass per photo
"""

# The flags, their mapping onto frozen configs and the one library call per mode live in
# nst_jax/cli.py, so that the installed nst-jax command and python -m nst_jax are this
# same program.
from nst_jax.cli import run

if __name__ == "__main__":
    run()
