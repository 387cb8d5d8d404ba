"""Train a VAE on images: examples/train_autoencoder.py with --model_type vae (read that script).

    python examples/train_vae.py --output_dir outputs/vae --do_train --do_eval  # embedded digits
    python examples/train_vae.py --dataset_name ylecun/mnist --output_dir outputs/vae-mnist --do_train --do_eval
    accelerate launch examples/train_vae.py --dataset_name uoft-cs/cifar10 --output_dir outputs/vae-cifar --do_train
"""

import functools
import sys

from train_autoencoder import main

from hf_autoencoders.cli import run_main

if __name__ == "__main__":
    run_main(functools.partial(main, model_type="vae"), sys.argv[1:])
