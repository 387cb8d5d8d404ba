"""The `hf-autoencoders` command.

    hf-autoencoders train --model_type vqvae --output_dir outputs/vqvae --do_train --do_eval [TrainingArguments...]
    hf-autoencoders train-prior --vqvae outputs/vqvae --output_dir outputs/prior --do_train
    hf-autoencoders evaluate outputs/vqvae [--dataset_name ylecun/mnist] [--downstream] [--linear_probe]
                             [--sample_quality 1000 [--prior outputs/prior]] [--output results.json]
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
    import torch

    from .data import ImageCollator, load_image_dataset
    from .metrics import evaluate_model

    parser = argparse.ArgumentParser(prog="hf-autoencoders evaluate", description="Test metrics of a trained model.")
    parser.add_argument("model", help="A trained model folder.")
    parser.add_argument("--dataset_name", default=None, help="Hub id or local folder (default: embedded digits).")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max_samples", type=int, default=None)
    parser.add_argument("--num_importance_samples", type=int, default=100, help="K of the IWAE bound (VAE).")
    parser.add_argument("--binarize", action="store_true", help="Threshold pixels at 0.5 (Bernoulli models).")
    parser.add_argument("--downstream", action="store_true",
                        help="Accuracy of a small CNN trained on the real training images, on the test images and on "
                             "their reconstructions (needs labels).")
    parser.add_argument("--linear_probe", action="store_true",
                        help="Test accuracy of a logistic regression on the representations (needs labels).")
    parser.add_argument("--sample_quality", type=int, default=0, metavar="N",
                        help="Judge N generated samples with the classifier trained on real images (needs labels).")
    parser.add_argument("--prior", default=None, help="A PixelCNN prior folder to sample a VQ-VAE's codes with.")
    parser.add_argument("--classifier_epochs", type=int, default=5)
    parser.add_argument("--max_train_samples", type=int, default=10_000,
                        help="Training images for the classifier and the probe.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="Write the metrics to this JSON file.")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    model = _load_model(args.model)
    prior = _load_prior(args.prior, model, args.model) if args.prior else None
    if args.output:
        _refuse_existing(Path(args.output), args.overwrite)
    data = load_image_dataset(args.dataset_name, split=args.split, image_size=model.config.image_size,
                              num_channels=model.config.num_channels, max_samples=args.max_samples)
    collator = ImageCollator(binarize=args.binarize)
    test = data[args.split]
    loader = [collator([test[j] for j in range(i, min(i + 256, len(test)))])["pixel_values"]
              for i in range(0, len(test), 256)]
    metrics = evaluate_model(model, loader, num_importance_samples=args.num_importance_samples, seed=args.seed)
    if args.downstream or args.linear_probe or args.sample_quality:
        metrics.update(_label_metrics(model, prior, data, args, collator, test_images=torch.cat(loader)))
    text = json.dumps(metrics, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)


def _label_metrics(model, prior, data, args, collator, test_images) -> dict:
    """Downstream accuracy, linear-probe accuracy and sample quality: the metrics that need class labels."""
    import warnings

    from .data import load_image_dataset
    from .metrics import (
        classifier_accuracy,
        collect_outputs,
        linear_probe_accuracy,
        representations,
        sample_quality,
        train_classifier,
    )
    from .reports import generate_samples

    test_labels = data[args.split].labels
    train_split = data.splits.get("train")
    if train_split is None:
        train_split = load_image_dataset(args.dataset_name, split="train", image_size=model.config.image_size,
                                         num_channels=model.config.num_channels,
                                         max_samples=args.max_train_samples)["train"]
    if test_labels is None or train_split.labels is None:
        raise SystemExit("error: --downstream, --linear_probe and --sample_quality need class labels, but the dataset "
                         "has none; pass a labelled dataset (or --label_column) or drop those flags.")
    n = min(len(train_split), args.max_train_samples)
    train_images = collator([train_split[i] for i in range(n)])["pixel_values"]
    train_labels = train_split.labels[:n]
    metrics = {}
    classifier = None
    if args.downstream or args.sample_quality:
        num_classes = data.num_labels or int(max(train_labels.max(), test_labels.max())) + 1
        classifier = train_classifier(train_images, train_labels, num_classes, args.classifier_epochs,
                                      seed=args.seed, device=model.device)
        metrics["classifier_test_accuracy"] = classifier_accuracy(classifier, test_images, test_labels)
    if args.downstream:
        reconstructions = collect_outputs(model, test_images, ("reconstruction",), progress=False)["reconstruction"]
        metrics["downstream_accuracy"] = classifier_accuracy(classifier, reconstructions.clamp(0, 1), test_labels)
    if args.linear_probe:
        with warnings.catch_warnings():  # a probe that ran out of iterations is still reported
            warnings.simplefilter("ignore")
            metrics["linear_probe_accuracy"] = linear_probe_accuracy(
                representations(model, train_images), train_labels, representations(model, test_images), test_labels)
    if args.sample_quality:
        samples = generate_samples(model, args.sample_quality, seed=args.seed, prior=prior).clamp(0, 1)
        metrics.update({f"sample_{k}": v for k, v in sample_quality(classifier, samples).items()})
        metrics["sample_num_samples"] = args.sample_quality
    return metrics


def _load_prior(path: str, model, model_path: str):
    if model.config.model_type != "hf_autoencoders_vqvae":
        raise SystemExit(f"error: --prior needs a VQ-VAE, but {model_path} is a {model.config.model_type}.")
    prior = _load_model(path)
    if getattr(prior.config, "num_embeddings", None) != model.config.num_embeddings:
        raise SystemExit(f"error: the prior {path} models {getattr(prior.config, 'num_embeddings', '?')} "
                         f"codes, the VQ-VAE has {model.config.num_embeddings}; train the prior on this VQ-VAE.")
    return prior


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
        prior = _load_prior(args.prior, model, args.model)
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
