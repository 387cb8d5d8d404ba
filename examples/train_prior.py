"""Train a gated PixelCNN prior over the codes of a trained VQ-VAE, so that the VQ-VAE can generate.

    python examples/train_vqvae.py --output_dir outputs/vqvae --do_train --do_eval      # embedded digits
    python examples/train_prior.py --vqvae outputs/vqvae --output_dir outputs/prior --do_train --do_eval
    hf-autoencoders sample outputs/vqvae --prior outputs/prior --output samples.png

    python examples/train_prior.py --vqvae outputs/vqvae-mnist --dataset_name ylecun/mnist --class_conditional \
        --output_dir outputs/prior-mnist --do_train --do_eval --max_steps 3000

The images are encoded once and their codes cached in <output_dir>/code_cache (or --code_cache_dir). Every
`TrainingArguments` flag works (--max_steps, --learning_rate, --resume_from_checkpoint, ...); `--help` lists them
with the prior's own flags (--hidden_size, --num_layers, --kernel_size, ...).
"""

import sys

from hf_autoencoders.cli import cmd_train_prior, run_main

if __name__ == "__main__":
    run_main(cmd_train_prior, sys.argv[1:])
