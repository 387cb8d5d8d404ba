"""Train a prior over the codes of a trained VQ-VAE, so that the VQ-VAE can generate: a gated PixelCNN (the default)
or, with --prior_type transformer, a GPT-2 causal language model over the codes in raster order.

    python examples/train_vqvae.py --output_dir outputs/vqvae --do_train --do_eval      # embedded digits
    python examples/train_prior.py --vqvae outputs/vqvae --output_dir outputs/prior --do_train --do_eval
    hf-autoencoders sample outputs/vqvae --prior outputs/prior --output samples.png

    python examples/train_prior.py --vqvae outputs/vqvae-mnist --dataset_name ylecun/mnist --class_conditional \
        --prior_type transformer --output_dir outputs/prior-mnist --do_train --do_eval --max_steps 3000
    hf-autoencoders sample outputs/vqvae-mnist --prior outputs/prior-mnist --top_k 100 --class_label 3

The images are encoded once and their codes cached in <output_dir>/code_cache (or --code_cache_dir). Every
`TrainingArguments` flag works (--max_steps, --learning_rate, --resume_from_checkpoint, ...); `--help` lists them
with the prior's own flags (--prior_type, --hidden_size, --num_layers, --kernel_size for the PixelCNN, --num_heads
for the transformer, ...). The transformer prior samples through `generate()` with the key/value cache and its folder
loads with plain `transformers.AutoModelForCausalLM.from_pretrained`, no remote code; its config records the VQ-VAE it
belongs to. The steps (extract the codes, train, evaluate with --do_eval, pictures, card) are those of
`hf_autoencoders.training.prior.run_prior_training`, which `hf-autoencoders train-prior` runs too.
"""

import sys

from hf_autoencoders.cli import run_main
from hf_autoencoders.training import parse_prior_args


def main(argv: list[str] | None = None) -> dict:
    prior_args, training_args = parse_prior_args(argv)  # `--help` is answered here, before torch is imported
    from hf_autoencoders.training.prior import run_prior_training

    return run_prior_training(prior_args, training_args)


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
