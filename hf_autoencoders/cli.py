"""The `hf-autoencoders` command.

    hf-autoencoders train --model_type vqvae --output_dir outputs/vqvae --do_train --do_eval [TrainingArguments...]
    hf-autoencoders train-prior --vqvae outputs/vqvae --output_dir outputs/prior --do_train
    hf-autoencoders evaluate outputs/vqvae [--dataset_name ylecun/mnist] [--output results.json]
    hf-autoencoders sample outputs/vqvae [--prior outputs/prior] --num_samples 64 --output samples.png
    hf-autoencoders push outputs/vqvae user/my-vqvae
    hf-autoencoders experiment compare --output-dir studies/compare --quick
"""

import argparse
import json
import sys
from pathlib import Path


def _load_model(path: str):
    from transformers import AutoModel

    import hf_autoencoders  # noqa: F401  (registers the Auto classes)

    if not Path(path).is_dir():
        raise SystemExit(f"error: {path} is not a folder; pass the --output_dir of a training run.")
    if not (Path(path) / "config.json").is_file():
        raise SystemExit(f"error: {path} has no config.json; pass the --output_dir of a finished training run.")
    return AutoModel.from_pretrained(path).eval()


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise SystemExit(f"error: {path} already exists; choose another --output or pass --overwrite.")


def cmd_evaluate(argv: list[str]) -> None:
    from .data import ImageCollator, load_image_dataset
    from .metrics import evaluate_model

    parser = argparse.ArgumentParser(prog="hf-autoencoders evaluate", description="Test metrics of a trained model.")
    parser.add_argument("model", help="A trained model folder.")
    parser.add_argument("--dataset_name", default=None, help="Hub id or local folder (default: embedded digits).")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max_samples", type=int, default=None)
    parser.add_argument("--num_importance_samples", type=int, default=100, help="K of the IWAE bound (VAE).")
    parser.add_argument("--binarize", action="store_true", help="Threshold pixels at 0.5 (Bernoulli models).")
    parser.add_argument("--output", default=None, help="Write the metrics to this JSON file.")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    model = _load_model(args.model)
    if args.output:
        _refuse_existing(Path(args.output), args.overwrite)
    data = load_image_dataset(args.dataset_name, split=args.split, image_size=model.config.image_size,
                              num_channels=model.config.num_channels, max_samples=args.max_samples)
    collator = ImageCollator(binarize=args.binarize)
    loader = [collator([data[args.split][j] for j in range(i, min(i + 256, len(data[args.split])))])["pixel_values"]
              for i in range(0, len(data[args.split]), 256)]
    metrics = evaluate_model(model, loader, num_importance_samples=args.num_importance_samples)
    text = json.dumps(metrics, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)


def cmd_sample(argv: list[str]) -> None:
    import torch

    from .plots import plot_samples

    parser = argparse.ArgumentParser(prog="hf-autoencoders sample", description="Write a grid of generated images.")
    parser.add_argument("model", help="A trained AE, VAE or VQ-VAE folder.")
    parser.add_argument("--prior", default=None, help="A trained PixelCNN prior folder (VQ-VAE only).")
    parser.add_argument("--num_samples", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="samples.png")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if args.num_samples < 1:
        raise SystemExit("error: --num_samples must be >= 1.")
    _refuse_existing(Path(args.output), args.overwrite)
    model = _load_model(args.model)
    generator = torch.Generator().manual_seed(args.seed)
    if args.prior is not None:
        if model.config.model_type != "hf_autoencoders_vqvae":
            raise SystemExit(f"error: --prior needs a VQ-VAE, but {args.model} is a {model.config.model_type}.")
        prior = _load_model(args.prior)
        if getattr(prior.config, "num_embeddings", None) != model.config.num_embeddings:
            raise SystemExit(f"error: the prior {args.prior} models {getattr(prior.config, 'num_embeddings', '?')} "
                             f"codes, the VQ-VAE has {model.config.num_embeddings}; train the prior on this VQ-VAE.")
        images = model.sample(args.num_samples, generator=generator, prior=prior, temperature=args.temperature)
    else:
        images = model.sample(args.num_samples, generator=generator)
    path = plot_samples(images.clamp(0, 1), args.output)
    print(f"wrote {path}")


def cmd_push(argv: list[str]) -> None:
    from .hub import push_to_hub

    parser = argparse.ArgumentParser(prog="hf-autoencoders push", description="Upload a run folder to the Hub.")
    parser.add_argument("folder")
    parser.add_argument("repo_id")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--token", default=None)
    args = parser.parse_args(argv)
    print(push_to_hub(args.folder, args.repo_id, token=args.token, private=args.private or None))


def cmd_train(argv: list[str]) -> None:
    from .training import parse_args, run_training

    run_training(*parse_args(argv))


def cmd_train_prior(argv: list[str]) -> None:
    from .prior_training import parse_prior_args, run_prior_training

    run_prior_training(*parse_prior_args(argv))


def cmd_experiment(argv: list[str]) -> None:
    from .experiments import main as experiment_main

    experiment_main(argv)


COMMANDS = {
    "train": cmd_train,
    "train-prior": cmd_train_prior,
    "evaluate": cmd_evaluate,
    "sample": cmd_sample,
    "push": cmd_push,
    "experiment": cmd_experiment,
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip())
        if argv and argv[0] not in ("-h", "--help"):
            raise SystemExit(f"error: unknown command {argv[0]!r}; use one of {', '.join(COMMANDS)}.")
        return
    COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
