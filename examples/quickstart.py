"""The main job: a VQ-VAE on the embedded digits (no network), then a PixelCNN prior over its codes, so the VQ-VAE can
generate. Writes two trained models with their pictures:

    OUTPUT_DIR/vqvae/   model.safetensors, config.json, model code, reconstructions.png, samples.png (uniform codes),
                        loss_curves.png, README.md (model card with the test metrics)
    OUTPUT_DIR/prior/   the prior, samples.png (prior samples decoded by the VQ-VAE), uniform_samples.png, README.md

    python examples/quickstart.py --output_dir outputs/quickstart
    python examples/quickstart.py --dataset_name ../shared/data/mnist --output_dir outputs/mnist --vqvae_steps 2000
"""

import sys
from pathlib import Path

from hf_autoencoders.cli import run_main
from hf_autoencoders.training import parse_args, parse_command, parse_prior_args


def quickstart_parser():
    from hf_autoencoders.training import ArgumentParser

    parser = ArgumentParser(prog="examples/quickstart.py", description=__doc__)
    parser.add_argument("--output_dir", default="outputs/quickstart")
    parser.add_argument("--dataset_name", default=None, help="Hub id or local folder (default: embedded digits).")
    parser.add_argument("--vqvae_steps", type=int, default=250)
    parser.add_argument("--prior_steps", type=int, default=300)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite_output_dir", action="store_true")
    return parser


def main(argv):
    args = parse_command("quickstart", quickstart_parser, argv)
    from hf_autoencoders.training import RunFolderLock, check_output_dir

    check_output_dir(args.output_dir, args.overwrite_output_dir)
    with RunFolderLock(args.output_dir):  # the job owns its folder until it ends
        train_vqvae_and_prior(args)


def train_vqvae_and_prior(args):
    from hf_autoencoders.training import run_training
    from hf_autoencoders.training.prior import run_prior_training

    out = Path(args.output_dir)
    dataset = ["--dataset_name", args.dataset_name] if args.dataset_name else []
    overwrite = ["--overwrite_output_dir"] if args.overwrite_output_dir else []
    common = ["--do_train", "--do_eval", "--seed", str(args.seed),
              "--per_device_train_batch_size", str(args.batch_size), "--logging_steps", "25",
              "--save_strategy", "no", *dataset, *overwrite]

    print("1/2 training the VQ-VAE")
    vqvae_metrics = run_training(*parse_args(["--output_dir", str(out / "vqvae"), "--max_steps", str(args.vqvae_steps),
                              "--hidden_size", "32", "--embedding_dim", "16", "--num_embeddings", "128", *common],
                             model_type="vqvae"))
    print("2/2 training the PixelCNN prior over its codes")
    metrics = run_prior_training(*parse_prior_args([
        "--vqvae", str(out / "vqvae"), "--output_dir", str(out / "prior"), "--max_steps", str(args.prior_steps),
        "--hidden_size", "32", "--num_layers", "4", "--kernel_size", "3", "--learning_rate", "3e-3", *common]))
    print(f"\nVQ-VAE test PSNR {vqvae_metrics['eval_psnr']:.2f} dB, codebook usage "
          f"{vqvae_metrics['eval_codebook_usage']:.0%}; "
          f"prior test NLL {metrics.get('eval_loss', float('nan')):.3f} nats/code")
    print(f"Pictures: {out / 'vqvae' / 'reconstructions.png'}, {out / 'prior' / 'samples.png'} "
          f"(vs uniform codes: {out / 'prior' / 'uniform_samples.png'})")


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
