"""Train a VQ-VAE on images: examples/train_autoencoder.py with --model_type vqvae (read that script).

    python examples/train_vqvae.py --output_dir outputs/vqvae --do_train --do_eval  # embedded digits
    python examples/train_vqvae.py --dataset_name ylecun/mnist --output_dir outputs/vqvae-mnist --do_train --do_eval
    accelerate launch examples/train_vqvae.py --dataset_name uoft-cs/cifar10 --output_dir outputs/vqvae-cifar --do_train
"""

import functools
import sys

from train_autoencoder import main

from hf_autoencoders.cli import run_main

if __name__ == "__main__":
    run_main(functools.partial(main, model_type="vqvae"), sys.argv[1:])
