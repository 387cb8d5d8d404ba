"""Train an AE on images: examples/train_autoencoder.py with --model_type ae (read that script).

    python examples/train_ae.py --output_dir outputs/ae --do_train --do_eval  # embedded digits
    python examples/train_ae.py --dataset_name ylecun/mnist --output_dir outputs/ae-mnist --do_train --do_eval
    accelerate launch examples/train_ae.py --dataset_name uoft-cs/cifar10 --output_dir outputs/ae-cifar --do_train
"""

import functools
import sys

from train_autoencoder import main

from hf_autoencoders.cli import run_main

if __name__ == "__main__":
    run_main(functools.partial(main, model_type="ae"), sys.argv[1:])
