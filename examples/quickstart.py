"""The main job: a VQ-VAE on the embedded digits (no network), then a class-conditional transformer prior over its
codes, so that the VQ-VAE generates digits of the class asked for (sampled with classifier-free guidance). Writes
two trained models with their pictures:

    OUTPUT_DIR/vqvae/   model.safetensors, config.json, model code, reconstructions.png, samples.png (uniformly
                        random codes: the VQ-VAE without a prior), loss_curves.png, README.md (model card with the
                        test metrics)
    OUTPUT_DIR/prior/   the prior (a GPT-2 over code tokens), samples.png (one row of samples per digit, decoded by
                        the VQ-VAE), uniform_samples.png, loss_curves.png, README.md

    python examples/quickstart.py --output_dir outputs/quickstart
    python examples/quickstart.py --dataset_name ../shared/data/mnist --output_dir outputs/mnist --vqvae_steps 2000
    hf-autoencoders sample outputs/quickstart/vqvae --prior outputs/quickstart/prior --class_label 3 --guidance_scale 2
"""

import sys
from pathlib import Path

from hf_autoencoders.cli import run_main
from hf_autoencoders.training import parse_args, parse_command, parse_prior_args


# The prior: a small transformer (the main job's time allows about as much training as the PixelCNN of before had;
# benchmarks/README.md, "Generation"), at a learning rate that suits few steps.
PRIOR_SIZE = ["--hidden_size", "64", "--num_layers", "2", "--num_heads", "4", "--learning_rate", "5e-3"]


def quickstart_parser():
    from hf_autoencoders.training import ArgumentParser

    parser = ArgumentParser(prog="examples/quickstart.py", description=__doc__)
    parser.add_argument("--output_dir", default="outputs/quickstart")
    parser.add_argument("--dataset_name", default=None, help="Hub id or local folder (default: embedded digits).")
    parser.add_argument("--vqvae_steps", type=int, default=250)
    parser.add_argument("--prior_steps", type=int, default=300)
    parser.add_argument("--num_samples", type=int, default=100,
                        help="Samples in the prior's samples.png: in all, one row per class.")
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
    print("2/2 training a class-conditional transformer prior over its codes")
    metrics = run_prior_training(*parse_prior_args([
        "--vqvae", str(out / "vqvae"), "--output_dir", str(out / "prior"), "--max_steps", str(args.prior_steps),
        "--class_conditional", *PRIOR_SIZE, "--num_samples", str(args.num_samples), *common]))
    print(f"\nVQ-VAE test PSNR {vqvae_metrics['eval_psnr']:.2f} dB, codebook usage "
          f"{vqvae_metrics['eval_codebook_usage']:.0%}; "
          f"prior test NLL {metrics.get('eval_loss', float('nan')):.3f} nats/code")
    print(f"Pictures: {out / 'vqvae' / 'reconstructions.png'}, {out / 'prior' / 'samples.png'} (one row per digit; "
          f"vs uniform codes: {out / 'prior' / 'uniform_samples.png'})")


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
