"""Train a VQVAE on images, like transformers' run_mae.py.

    python examples/train_vqvae.py --output_dir outputs/vqvae --do_train --do_eval  # embedded digits
    python examples/train_vqvae.py --dataset_name ylecun/mnist --output_dir outputs/vqvae-mnist --do_train --do_eval
    accelerate launch examples/train_vqvae.py --dataset_name uoft-cs/cifar10 --output_dir outputs/vqvae-cifar --do_train

Every `TrainingArguments` flag works (--max_steps, --per_device_train_batch_size, --resume_from_checkpoint, ...);
`--help` lists them with the model and data flags.
"""

import sys

from hf_autoencoders.cli import cmd_train, run_main

if __name__ == "__main__":
    run_main(cmd_train, ["--model_type", "vqvae", *sys.argv[1:]])
