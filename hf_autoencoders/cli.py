"""The `hf-autoencoders` command.

    hf-autoencoders train --model_type vqvae --output_dir outputs/vqvae --do_train --do_eval [TrainingArguments...]
    hf-autoencoders train-prior --vqvae outputs/vqvae --output_dir outputs/prior --do_train
    hf-autoencoders evaluate outputs/vqvae [--dataset_name ylecun/mnist] [--downstream] [--linear_probe]
                             [--sample_quality 1000 [--prior outputs/prior]] [--output_file results.json]
    hf-autoencoders sample outputs/vqvae [--prior outputs/prior] --num_samples 64 --output_file samples.png
    hf-autoencoders push outputs/vqvae user/my-vqvae
    hf-autoencoders experiment compare --output_dir studies/compare --quick

One convention for every command and example script: flags are spelled with underscores as in transformers'
scripts, and each also answers to its dash spelling (--output_dir or --output-dir). A model is a local folder or a
Hub id. A user error prints one `error: ...` line saying what to do, and exits with status 2.
"""

import argparse
import json
import sys
from pathlib import Path

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError, IsADirectoryError)


def _version() -> str:
    from . import __version__

    return __version__


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a dash spelling beside every underscore flag and errors as one `error: ...` line."""

    def add_argument(self, *names, **kwargs):
        dashed = [name.replace("_", "-") for name in names if name.startswith("--") and "_" in name]
        return super().add_argument(*names, *dashed, **kwargs)

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another --output_file or pass --overwrite_output_file.")
    if not path.parent.exists():
        raise FileNotFoundError(f"the folder {path.parent} of --output_file does not exist; create it first.")


def load_model(name_or_path: str, what: str = "model"):
    """The model in a run folder or Hub repository, in eval mode, with a clear error for anything else."""
    from transformers import AutoConfig, AutoModel

    import hf_autoencoders.models  # noqa: F401  (registers the Auto classes)

    path = Path(name_or_path)
    if path.exists() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"{name_or_path} has no config.json: pass the --output_dir of a finished training run "
                                f"(or a Hub id) as the {what}.")
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except OSError as err:
        raise FileNotFoundError(f"{name_or_path} is neither a model folder nor a model on the Hub that can be reached "
                                f"({err}).") from None
    except ValueError as err:  # a model type this version does not know
        raise ValueError(f"{name_or_path} holds a model hf_autoencoders cannot load: {err}") from None
    return AutoModel.from_pretrained(name_or_path, config=config).eval()


def _load_prior(name_or_path: str, model, model_name: str):
    prior = load_model(name_or_path, "prior")
    if not hasattr(model, "check_prior"):
        raise ValueError(f"--prior needs a VQ-VAE, but {model_name} is a {model.config.display_name}.")
    model.check_prior(prior)
    return prior


def cmd_evaluate(argv: list[str]) -> None:
    parser = ArgumentParser(prog="hf-autoencoders evaluate", description="Test metrics of a trained model, as JSON.")
    parser.add_argument("model", help="A trained model: a run folder or a Hub id.")
    parser.add_argument("--dataset_name", default=None, help="Hub id or local folder (default: embedded digits).")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max_eval_samples", type=int, default=None, help="Evaluate the first N images only.")
    parser.add_argument("--num_importance_samples", type=int, default=100,
                        help="K of the IWAE bound of a VAE (0 skips it).")
    parser.add_argument("--binarize", action="store_true", help="Threshold pixels at 0.5 (Bernoulli models).")
    parser.add_argument("--downstream", action="store_true",
                        help="Accuracy of a small CNN trained on the real training images, on the test images and on "
                             "their reconstructions (needs labels).")
    parser.add_argument("--linear_probe", action="store_true",
                        help="Test accuracy of a logistic regression on the representations (needs labels).")
    parser.add_argument("--sample_quality", type=int, default=0, metavar="N",
                        help="Judge N generated samples with the classifier trained on real images (needs labels).")
    parser.add_argument("--prior", default=None, help="The prior to sample a VQ-VAE's codes with (folder or Hub id).")
    parser.add_argument("--classifier_epochs", type=int, default=5)
    parser.add_argument("--max_train_samples", type=int, default=10_000,
                        help="Training images for the classifier and the probe.")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0, help="Seeds every random draw: the same seed, the same numbers.")
    parser.add_argument("--output_file", "--output", default=None, help="Also write the metrics to this JSON file.")
    parser.add_argument("--overwrite_output_file", "--overwrite", action="store_true",
                        help="Write over an existing --output_file.")
    args = parser.parse_args(argv)
    for name in ("max_eval_samples", "max_train_samples", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    for name in ("num_importance_samples", "sample_quality", "classifier_epochs"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0, got {getattr(args, name)}")
    if args.output_file:
        _refuse_existing(Path(args.output_file), args.overwrite_output_file)

    import torch

    from .data import ImageCollator, load_image_dataset
    from .evaluation import evaluate

    model = load_model(args.model)
    prior = _load_prior(args.prior, model, args.model) if args.prior else None
    data = load_image_dataset(args.dataset_name, split=args.split, image_size=model.config.image_size,
                              num_channels=model.config.num_channels, max_samples=args.max_eval_samples)
    collator = ImageCollator(binarize=args.binarize)
    test = data[args.split]
    loader = torch.utils.data.DataLoader(test, batch_size=args.batch_size, collate_fn=collator)
    metrics = evaluate(model, loader, num_importance_samples=args.num_importance_samples, seed=args.seed)
    if args.downstream or args.linear_probe or args.sample_quality:
        test_images = torch.cat([batch["pixel_values"] for batch in loader])
        metrics.update(_label_metrics(model, prior, data, args, collator, test_images))
    text = json.dumps(metrics, indent=2)
    if args.output_file:
        Path(args.output_file).write_text(text + "\n")
    print(text)


def _label_metrics(model, prior, data, args, collator, test_images) -> dict:
    """Downstream accuracy, linear-probe accuracy and sample quality: the metrics that need class labels."""
    import warnings

    import torch

    from .data import load_image_dataset
    from .evaluation import (
        classifier_accuracy,
        linear_probe_accuracy,
        representations,
        sample_quality,
        train_classifier,
    )

    test_labels = data[args.split].labels
    train_split = data.splits.get("train")
    if train_split is None:
        train_split = load_image_dataset(args.dataset_name, split="train", image_size=model.config.image_size,
                                         num_channels=model.config.num_channels,
                                         max_samples=args.max_train_samples)["train"]
    if test_labels is None or train_split.labels is None:
        raise ValueError("--downstream, --linear_probe and --sample_quality need class labels, but the dataset has "
                         "none; pass a labelled dataset (or --label_column) or drop those flags.")
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
        with torch.no_grad():
            reconstructions = torch.cat([model(x.to(model.device)).reconstruction.clamp(0, 1).cpu()
                                         for x in test_images.split(args.batch_size)])
        metrics["downstream_accuracy"] = classifier_accuracy(classifier, reconstructions, test_labels)
    if args.linear_probe:
        with warnings.catch_warnings():  # a probe that ran out of iterations is still reported
            warnings.simplefilter("ignore")
            metrics["linear_probe_accuracy"] = linear_probe_accuracy(
                representations(model, train_images), train_labels, representations(model, test_images), test_labels)
    if args.sample_quality:
        generator = torch.Generator(device=model.device).manual_seed(args.seed)
        samples = model.sample(args.sample_quality, generator=generator, prior=prior).clamp(0, 1)
        metrics.update({f"sample_{k}": v for k, v in sample_quality(classifier, samples).items()})
        metrics["sample_num_samples"] = args.sample_quality
    return metrics


def cmd_sample(argv: list[str]) -> None:
    parser = ArgumentParser(prog="hf-autoencoders sample", description="Write a grid of generated images.")
    parser.add_argument("model", help="A trained AE, VAE or VQ-VAE: a run folder or a Hub id.")
    parser.add_argument("--prior", default=None, help="A prior over the VQ-VAE's codes (folder or Hub id).")
    parser.add_argument("--num_samples", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0, help="Of the prior's sampling (VQ-VAE).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_file", "--output", default="samples.png", help="The PNG to write.")
    parser.add_argument("--overwrite_output_file", "--overwrite", action="store_true",
                        help="Write over an existing --output_file.")
    args = parser.parse_args(argv)
    if args.num_samples < 1:
        parser.error(f"--num_samples must be a positive integer, got {args.num_samples}")
    if not args.temperature >= 0:
        parser.error(f"--temperature must be >= 0 (0 = the most likely code), got {args.temperature}")
    _refuse_existing(Path(args.output_file), args.overwrite_output_file)

    import torch

    from .plots import plot_samples

    model = load_model(args.model)
    generator = torch.Generator().manual_seed(args.seed)
    if args.prior is not None:
        prior = _load_prior(args.prior, model, args.model)
        images = model.sample(args.num_samples, generator=generator, prior=prior, temperature=args.temperature)
    else:
        images = model.sample(args.num_samples, generator=generator)
    path = plot_samples(images.clamp(0, 1), args.output_file)
    print(f"wrote {path}")


def cmd_push(argv: list[str]) -> None:
    parser = ArgumentParser(prog="hf-autoencoders push", description="Upload a run folder to the Hub.")
    parser.add_argument("folder", help="The --output_dir of a finished training run.")
    parser.add_argument("repo_id", help="The Hub repository, e.g. your-name/vqvae-mnist.")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--token", default=None)
    args = parser.parse_args(argv)

    from .hub import push_to_hub

    print(push_to_hub(args.folder, args.repo_id, token=args.token, private=args.private or None))


def cmd_train(argv: list[str]) -> None:
    from .training.arguments import parse_args

    arguments = parse_args(argv)  # --help answers here, before the models are imported
    from .training.run import run_training

    run_training(*arguments)


def cmd_train_prior(argv: list[str]) -> None:
    from .training.arguments import parse_prior_args

    arguments = parse_prior_args(argv)  # --help answers here, before the models are imported
    from .training.prior import run_prior_training

    run_prior_training(*arguments)


def cmd_experiment(argv: list[str]) -> dict:
    from .studies import EXPERIMENTS, check_request, run_experiment

    parser = ArgumentParser(
        prog="hf-autoencoders experiment",
        description="Run a classic autoencoder experiment and write report.md, results.json and PNGs.",
    )
    parser.add_argument("name", choices=list(EXPERIMENTS))
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--quick", action="store_true", help="Small models and budgets: minutes on 2 CPU cores.")
    parser.add_argument("--dataset_name", default=None,
                        help="Hub id or local folder (default: the embedded digits), e.g. ../shared/data/mnist.")
    parser.add_argument("--max_steps", type=int, default=None, help="Training steps per model (overrides the budget).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite_output_dir", "--overwrite", action="store_true",
                        help="Write into a folder that already holds files.")
    parser.add_argument("--no_progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)
    if args.max_steps is not None and args.max_steps < 1:
        parser.error(f"--max_steps must be a positive integer, got {args.max_steps}")

    overrides = {} if args.max_steps is None else {"max_steps": args.max_steps}
    check_request(args.name, args.output_dir, args.quick, args.overwrite_output_dir, overrides)
    results = run_experiment(args.name, args.output_dir, quick=args.quick, dataset_name=args.dataset_name,
                             seed=args.seed, overwrite=True, progress=args.progress, **overrides)
    print(f"wrote {Path(args.output_dir) / 'report.md'} and results.json")
    return results


COMMANDS = {
    "train": cmd_train,
    "train-prior": cmd_train_prior,
    "evaluate": cmd_evaluate,
    "sample": cmd_sample,
    "push": cmd_push,
    "experiment": cmd_experiment,
}


def fail(message: str, status: int = 2):
    """End the command with one `error: ...` line on stderr."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(status)


def run_main(command, argv: list[str]) -> None:
    """Run `command(argv)`, turning a user error into one `error: ...` line and exit status 2."""
    try:
        command(argv)
    except USER_ERRORS as err:
        fail(str(err).strip() or type(err).__name__)
    except KeyboardInterrupt:
        fail("interrupted", 130)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-V", "--version"):
        print(f"hf-autoencoders {_version()}")
        return
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return
    if argv[0] not in COMMANDS:
        fail(f"unknown command {argv[0]!r}; use one of {', '.join(COMMANDS)} (see `hf-autoencoders --help`).")
    run_main(COMMANDS[argv[0]], argv[1:])


if __name__ == "__main__":
    main()
