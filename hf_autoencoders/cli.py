"""The `hf-autoencoders` command.

    hf-autoencoders train --model_type vqvae --output_dir outputs/vqvae --do_train --do_eval [TrainingArguments...]
    hf-autoencoders train-prior --vqvae outputs/vqvae --output_dir outputs/prior --do_train
    hf-autoencoders evaluate outputs/vqvae [--dataset_name ylecun/mnist] [--downstream] [--linear_probe]
                             [--sample_quality 1000 [--prior outputs/prior]] [--output_file results.json]
                             [--fid [--num_samples 10000] [--features domain inception] [--inception_weights PATH]]
                             [--generability]
    hf-autoencoders sample outputs/vqvae [--prior outputs/prior [--class_label 3] [--guidance_scale 2]]
                           [--num_samples 64] [--output_file samples.png]
    hf-autoencoders push outputs/vqvae user/my-vqvae
    hf-autoencoders scaling-factor outputs/vae --dataset_name uoft-cs/cifar10 [--dry_run]
    hf-autoencoders export outputs/vae outputs/vae-diffusers --to diffusers
    hf-autoencoders encode outputs/vae --dataset_name uoft-cs/cifar10 --output_dir outputs/cifar-latents
    hf-autoencoders experiment compare --output_dir studies/compare --budget quick

One convention for every command and example script: flags are spelled with underscores as in transformers'
scripts, and each also answers to its dash spelling (--output_dir or --output-dir). A model is a local folder or a
Hub id. A user error prints one `error: ...` line saying what to do, and exits with status 2.
"""

import difflib
import errno
import os
import sys
import tempfile
from pathlib import Path

from .training.parsing import parse_args, parse_command, parse_prior_args

MAX_GRID_SAMPLES = 4096  # the most images `sample` puts in its one grid (64 x 64)
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError, IsADirectoryError)


def _version() -> str:
    from . import __version__

    return __version__


def check_output_file(path: Path, overwrite: bool, models: tuple = (), example: str = "results.json") -> None:
    """Before any work: refuse an --output_file that is a folder, that exists (without --overwrite_output_file), that
    is a file of one of the `models` the command reads, or whose folder is missing or cannot be written."""
    if path.is_dir():
        raise IsADirectoryError(f"--output_file {path} is a folder; name a file, e.g. {path / example}.")
    for model in models:
        folder = Path(model) if model else None
        if folder is not None and folder.is_dir() and path.exists() and folder.resolve() in path.resolve().parents:
            raise ValueError(f"--output_file {path} belongs to the model {model}: writing over it would change the "
                             "model. Choose a file outside its folder.")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another --output_file or pass --overwrite_output_file.")
    if not path.parent.exists():
        raise FileNotFoundError(f"the folder {path.parent} of --output_file does not exist; create it first.")
    try:
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as err:
        raise PermissionError(f"--output_file {path} cannot be written ({err.strerror}: {path.parent}); choose a "
                              "folder you can write to.") from None


def check_single_process(command: str) -> None:
    """Refuse to run `command`, which works in one process, as one of several processes launched together (by
    torchrun or accelerate launch, which set WORLD_SIZE): each would do the whole work and write the same files."""
    launched = os.environ.get("WORLD_SIZE", "1")
    if launched.strip() not in ("", "0", "1"):
        raise ValueError(f"`hf-autoencoders {command}` runs in one process, but it was launched as one of several "
                         f"(WORLD_SIZE={launched}, as torchrun and accelerate launch set it): each would do the whole "
                         f"work and write the same files. Run `hf-autoencoders {command} ...` without a launcher; "
                         "only train and train-prior run on several processes.")


def _load_prior(name_or_path: str, model, model_name: str):
    from .hub import load_model

    prior = load_model(name_or_path, "--prior")
    if not hasattr(model, "check_prior"):
        name = getattr(model.config, "display_name", model.config.model_type)
        raise ValueError(f"--prior needs a VQ-VAE, but {model_name} is a {name}.")
    model.check_prior(prior)
    return prior


def _bool(text: str) -> bool:
    from transformers.hf_argparser import string_to_bool

    return string_to_bool(text)


def _evaluate_parser():
    from .evaluation import EVAL_SEED, FEATURE_TRAIN_IMAGES
    from .training.arguments import ArgumentParser

    parser = ArgumentParser(prog="hf-autoencoders evaluate", description="Test metrics of a trained model, as JSON.")
    parser.add_argument("model", help="A trained model: a run folder or a Hub id.")
    parser.add_argument("--dataset_name", default=None, help="Hub id or local folder (default: embedded digits).")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max_eval_samples", type=int, default=None, help="Evaluate the first N images only.")
    parser.add_argument("--num_importance_samples", type=int, default=100,
                        help="K of the IWAE bound of a VAE (0 skips it).")
    parser.add_argument("--binarize", type=_bool, nargs="?", const=True, default=None,
                        help="Threshold the pixels (true or false). Default: as the model was trained, from its saved "
                             "image processor, which also gives the image size, channels and resampling.")
    parser.add_argument("--image_column", default=None, help="Image column (found by type if not given).")
    parser.add_argument("--label_column", default=None,
                        help="Label column, integers 0..C-1 (found by type if not given): what --downstream, "
                             "--linear_probe, --sample_quality and the domain features of --fid need.")
    parser.add_argument("--downstream", action="store_true",
                        help="Accuracy of a small CNN trained on the real training images, on the test images and on "
                             "their reconstructions (needs labels).")
    parser.add_argument("--linear_probe", action="store_true",
                        help="Test accuracy of a logistic regression on the representations (needs labels).")
    parser.add_argument("--sample_quality", type=int, default=0, metavar="N",
                        help="Judge N generated samples with the classifier trained on real images (needs labels).")
    parser.add_argument("--prior", default=None, help="The prior to sample a VQ-VAE's codes with (folder or Hub id).")
    parser.add_argument("--fid", action="store_true",
                        help="Fréchet distance, KID, precision/recall/density/coverage of the reconstructions and of "
                             "samples against the test images, on --features (see docs/metrics.md).")
    parser.add_argument("--num_samples", type=int, default=None, metavar="N",
                        help="Samples generated for --fid (default: as many as test images). FD is biased upwards "
                             "by ~1/N: compare FDs at the same N.")
    parser.add_argument("--features", nargs="+", choices=["domain", "inception"], default=None,
                        help="Features of --fid: domain (a small CNN trained on the labelled training images, "
                             "offline; default) and/or inception (InceptionV3 pool3: the FID of the literature; "
                             "default as well when --inception_weights is given).")
    parser.add_argument("--inception_weights", default=None, metavar="PATH",
                        help="The FID InceptionV3 weights (pt_inception-2015-12-05-6726825d.pth); without it "
                             "inception features download them once.")
    parser.add_argument("--generability", action="store_true",
                        help="VQ-VAE: how well its codes can be generated, to compare tokenizers beside the "
                             "reconstruction figures: train the library's default prior on its codes for a fixed "
                             "budget (--generability_steps), then the FD, precision and recall of its samples on "
                             "--features and its bits per image (minutes).")
    parser.add_argument("--generability_steps", type=int, default=None,
                        help="Training steps of --generability's prior (default: the library's fixed budget; compare "
                             "VQ-VAEs only at equal steps).")
    parser.add_argument("--perceptual", choices=["rotation", "domain", "lpips"], default=None,
                        help="Also the perceptual distance of each reconstruction to its image (perceptual_<name>), "
                             "on this network: rotation or domain (small CNNs trained on the training images, offline; "
                             "domain needs labels) or lpips (the published LPIPS-VGG, read from --lpips_weights or "
                             "downloaded). Figures of different networks do not compare; only lpips gives LPIPS.")
    parser.add_argument("--lpips_weights", default=None, metavar="PATH",
                        help="With --perceptual lpips: a folder holding vgg16-397923af.pth and lpips' v0.1 vgg.pth.")
    parser.add_argument("--classifier_epochs", type=int, default=5)
    parser.add_argument("--max_train_samples", type=int, default=FEATURE_TRAIN_IMAGES,
                        help="Training images for the classifier, the probe and the domain features.")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=EVAL_SEED,
                        help="Seeds every draw of the evaluation (a VAE's latents, the samples): the same seed, the "
                             "same numbers. The default is the seed of a training run's evaluation, so the numbers "
                             "match its card. The domain features are the dataset's, whatever the seed.")
    parser.add_argument("--output_file", "--output", default=None, help="Also write the metrics to this JSON file.")
    parser.add_argument("--overwrite_output_file", "--overwrite", action="store_true",
                        help="Write over an existing --output_file.")
    return parser


def cmd_evaluate(argv: list[str]) -> None:
    args = parse_command("evaluate", _evaluate_parser, argv)
    check_single_process("evaluate")
    for name in ("max_eval_samples", "max_train_samples", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name} must be a positive integer, got {getattr(args, name)}")
    for name in ("num_importance_samples", "sample_quality", "classifier_epochs"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name} must be >= 0, got {getattr(args, name)}")
    from .evaluation.loop import MAX_IMPORTANCE_SAMPLES

    if args.num_importance_samples > MAX_IMPORTANCE_SAMPLES:
        raise ValueError(f"--num_importance_samples must be at most {MAX_IMPORTANCE_SAMPLES}, got "
                         f"{args.num_importance_samples}: the IWAE paper evaluates with K = 5000, and the work grows "
                         "as images x K decoder passes.")
    if not (args.fid or args.generability) and (args.num_samples is not None or args.features
                                                 or args.inception_weights):
        raise ValueError("--num_samples, --features and --inception_weights apply to --fid and --generability; add "
                         "one of them")
    if args.generability_steps is not None and not args.generability:
        raise ValueError("--generability_steps applies to --generability; add --generability")
    if args.generability_steps is not None and args.generability_steps < 1:
        raise ValueError(f"--generability_steps must be a positive integer, got {args.generability_steps}")
    if args.lpips_weights and args.perceptual != "lpips":
        raise ValueError("--lpips_weights applies to --perceptual lpips; add it")
    if args.fid and args.max_eval_samples is not None and args.max_eval_samples < 6:
        raise ValueError(f"--fid needs at least 6 test images (density and coverage use 5 nearest neighbours), got "
                         f"--max_eval_samples {args.max_eval_samples}")
    if args.num_samples is not None and args.num_samples < 6:
        raise ValueError(f"--num_samples must be at least 6 (density and coverage use 5 nearest neighbours), got "
                         f"{args.num_samples}")
    if args.output_file:
        check_output_file(Path(args.output_file), args.overwrite_output_file, (args.model, args.prior))

    import torch

    from .data import ImageCollator
    from .evaluation import evaluate
    from .evaluation.metrics import unit_images
    from .hub import load_model, load_processor

    model = load_model(args.model, expect="autoencoder")
    prior = _load_prior(args.prior, model, args.model) if args.prior else None
    processor = load_processor(args.model, model.config)  # every preprocessing setting the model was trained with
    binarize = processor.do_binarize if args.binarize is None else args.binarize
    # images in [0, 1]: what classifiers and features read
    collator = ImageCollator(binarize=binarize, binarize_threshold=processor.binarize_threshold)
    data = _load_data(args, processor, split=args.split, max_samples=args.max_eval_samples)
    test = data[args.split]
    loader = torch.utils.data.DataLoader(test, batch_size=args.batch_size, collate_fn=collator)
    model_loader = torch.utils.data.DataLoader(  # the same images in the model's pixel range, for the model
        test, batch_size=args.batch_size, collate_fn=ImageCollator(
            binarize=binarize, binarize_threshold=processor.binarize_threshold, pixel_range=model.config.pixel_range))
    perceptual = _perceptual_network(model, data, args, collator) if args.perceptual else None
    extractors = _feature_networks(model, data, args) if args.fid or args.generability else []
    fid_features = extractors if args.fid else []
    real, reconstructed = ({features.name: [] for features in fid_features} for _ in range(2))

    def keep_features(pixel_values, output):  # the Fréchet distance's features, in the same pass (as training's)
        for features in fid_features:
            real[features.name].append(features.extract(pixel_values))
            reconstructed[features.name].append(features.extract(unit_images(model, output.reconstruction)))

    metrics = evaluate(model, model_loader, num_importance_samples=args.num_importance_samples, seed=args.seed,
                       perceptual=perceptual, on_batch=keep_features if fid_features else None)
    if perceptual is not None:
        metrics["perceptual_network"] = perceptual.description
    if args.downstream or args.linear_probe or args.sample_quality:
        test_images = torch.cat([batch["pixel_values"] for batch in loader])
        metrics.update(_label_metrics(model, prior, data, args, collator, test_images))
    if fid_features:
        from .evaluation import quality_from_features

        for features in fid_features:
            metrics.update(quality_from_features(
                model, features, torch.cat(real[features.name]), torch.cat(reconstructed[features.name]),
                num_samples=args.num_samples, prior=prior, seed=args.seed, batch_size=args.batch_size, progress=True,
                **_fid_sample_labels(prior, data, args)))
        metrics["quality_features"] = "; ".join(features.description for features in fid_features)
    if args.generability:
        metrics.update(_generability(model, data, args, collator, extractors))
    from .results import dumps, write_text

    text = dumps(metrics)
    print(text, flush=True)  # first: a file that cannot be written after all loses none of the numbers
    if args.output_file:
        write_text(args.output_file, text + "\n")


def _label_metrics(model, prior, data, args, collator, test_images) -> dict:
    """Downstream accuracy, linear-probe accuracy and sample quality: the metrics that need class labels."""
    import warnings

    import torch

    from .evaluation import (
        classifier_accuracy,
        downstream_accuracy,
        linear_probe_accuracy,
        representations,
        sample_quality,
        train_classifier,
    )
    from .evaluation.metrics import unit_images

    flags = "--downstream, --linear_probe and --sample_quality"
    test_labels = _labels(data, data[args.split], flags)
    train_images, train_labels = _train_images(model, data, args, collator, flags)
    metrics = {}
    if args.downstream or args.sample_quality:
        num_classes = data.num_labels or int(max(train_labels.max(), test_labels.max())) + 1
        classifier = train_classifier(train_images, train_labels, num_classes, args.classifier_epochs,
                                      seed=args.seed, device=model.device)
        if args.downstream:
            metrics.update(downstream_accuracy(model, classifier, test_images, test_labels, args.batch_size))
        else:
            metrics["classifier_test_accuracy"] = classifier_accuracy(classifier, test_images, test_labels)
    if args.linear_probe:
        with warnings.catch_warnings():  # a probe that ran out of iterations is still reported
            warnings.simplefilter("ignore")
            metrics["linear_probe_accuracy"] = linear_probe_accuracy(
                representations(model, train_images), train_labels, representations(model, test_images), test_labels)
    if args.sample_quality:
        generator = torch.Generator(device=model.device).manual_seed(args.seed)
        labels = _sample_labels(prior, test_labels, args.sample_quality)
        samples = unit_images(model, model.sample(args.sample_quality, generator=generator, prior=prior, **labels))
        metrics.update({f"sample_{k}": v for k, v in sample_quality(classifier, samples).items()})
        metrics["sample_num_samples"] = args.sample_quality
    return metrics


def _load_data(args, processor, split: str, max_samples):
    """The split of --dataset_name, decoded as the model's saved image processor decodes (image size, channels,
    resampling)."""
    from .data import load_image_dataset

    return load_image_dataset(args.dataset_name, split=split, image_size=processor.image_size,
                              num_channels=processor.num_channels, resample=processor.resample,
                              image_column=args.image_column, label_column=args.label_column, max_samples=max_samples)


def _labels(data, split, flags: str):
    """The class labels of `split`, checked (`data.check_class_labels`); an error naming `flags` without any."""
    from .data import check_class_labels

    if split.labels is None:
        raise ValueError(f"{flags} need class labels, but {data.name} has none; pass a labelled dataset (or name its "
                         "label column with --label_column) or drop those flags.")
    return check_class_labels(split.labels, data.name, f"drop {flags}")


def _train_split(model, data, args, flags: str | None = None):
    """The training split (its first --max_train_samples images), decoded as the model's saved image processor
    decodes: what the classifier, the probe, the domain features and the offline perceptual networks learn from.
    With `flags` (what needs them), labels are required (`_labels`)."""
    from .hub import load_processor

    train_split = data.splits.get("train")
    if train_split is None:
        train_split = _load_data(args, load_processor(args.model, model.config), "train",
                                 args.max_train_samples)["train"]
    if flags:
        _labels(data, train_split, flags)
    return train_split


def _train_images(model, data, args, collator, flags: str | None = None):
    """The first --max_train_samples training images, as pixel_values and labels (`_train_split`)."""
    train_split = _train_split(model, data, args)
    n = min(len(train_split), args.max_train_samples)
    labels = None
    if flags or train_split.labels is not None:  # checked once: required with `flags`, else where there are any
        labels = _labels(data, train_split, flags or "these flags")[:n]
    return collator([train_split[i] for i in range(n)])["pixel_values"], labels


def _sample_labels(prior, test_labels, num_samples: int) -> dict:
    """{"class_labels": ...} for `num_samples` samples of a class-conditional prior: the test images' classes in
    turn, so that samples and test images have the same class balance (what FD and the sample scores compare);
    the classes in turn where the test images carry no labels. {} for any other prior."""
    import torch

    num_classes = getattr(getattr(prior, "config", None), "num_classes", 0) or 0
    if num_classes == 0:
        return {}
    if test_labels is None or not len(test_labels):
        return {"class_labels": torch.arange(num_samples) % num_classes}
    if int(test_labels.max()) >= num_classes:
        raise ValueError(f"the test labels go up to {int(test_labels.max())}, but the prior knows {num_classes} "
                         "classes: evaluate it on the dataset it was trained on.")
    return {"class_labels": test_labels.repeat(-(-num_samples // len(test_labels)))[:num_samples]}


def _fid_sample_labels(prior, data, args) -> dict:
    """The class labels of --fid's samples of a class-conditional prior (`_sample_labels`, the test images' classes
    in turn), as `class_labels` for `evaluation.quality_from_features`."""
    test_labels = data[args.split].labels
    if prior is not None and prior.config.num_classes > 0 and test_labels is not None:
        test_labels = _labels(data, data[args.split], "--fid with a class-conditional prior")
    return _sample_labels(prior, test_labels, args.num_samples or len(data[args.split]))


def _perceptual_network(model, data, args, collator):
    """--perceptual: the network the perceptual distance is measured on (`evaluation.perceptual`)."""
    from .evaluation.perceptual import perceptual_network

    if args.perceptual == "lpips":
        return perceptual_network("lpips", lpips_weights=args.lpips_weights, device=model.device)
    images, labels = _train_images(model, data, args, collator, "--perceptual domain" if args.perceptual == "domain"
                                   else None)
    return perceptual_network(args.perceptual, images, labels, num_classes=data.num_labels, dataset_name=data.name,
                              device=model.device)


def _feature_networks(model, data, args) -> list:
    """--fid: the feature networks of each kind of --features, the domain one first: the dataset's
    (`evaluation.dataset_features`, the network a training run's evaluation measures in) and InceptionV3."""
    from .evaluation import dataset_features, inception_features
    from .hub import public_name

    kinds = args.features or (["domain", "inception"] if args.inception_weights else ["domain"])
    extractors = []
    if "inception" in kinds:  # first: a missing weights file should stop the command before any training
        extractors.append(inception_features(args.inception_weights, device=model.device))
    if "domain" in kinds:
        train_split = _train_split(model, data, args, "--fid and --generability with domain features (or pass "
                                   "--features inception)")
        extractors.insert(0, dataset_features(
            train_split, num_classes=data.num_labels, dataset_name=public_name(data.name),
            max_images=args.max_train_samples, epochs=args.classifier_epochs, device=model.device))
    return extractors


def _generability(model, data, args, collator, extractors) -> dict:
    """--generability: the default prior trained on the VQ-VAE's codes of the training images for a fixed budget,
    its samples scored against the test split (`training.generability`)."""
    from .training.generability import GENERABILITY_STEPS, generability

    if not hasattr(model, "check_prior"):
        name = getattr(model.config, "display_name", model.config.model_type)
        raise ValueError(f"--generability measures how well a VQ-VAE's codes can be generated, but {args.model} is a "
                         f"{name}: it has no codes.")
    train = _train_split(model, data, args)
    return generability(model, train, data[args.split], features=extractors, collator=collator, seed=args.seed,
                        steps=args.generability_steps or GENERABILITY_STEPS, batch_size=args.batch_size)


def _sample_parser():
    from .training.arguments import ArgumentParser

    parser = ArgumentParser(prog="hf-autoencoders sample", description="Write a grid of generated images.")
    parser.add_argument("model", help="A trained AE, VAE or VQ-VAE: a run folder or a Hub id.")
    parser.add_argument("--prior", default=None, help="A prior over the VQ-VAE's codes (folder or Hub id).")
    parser.add_argument("--num_samples", type=int, default=64,
                        help="Images in the grid (with several classes: in all, rounded up to full rows).")
    parser.add_argument("--class_label", nargs="+", default=None, metavar="LABEL",
                        help="Class-conditional prior: the class of every sample (one number), a row per class of a "
                             "list (3 5 8), or all: a row per class (the default).")
    parser.add_argument("--guidance_scale", type=float, default=None,
                        help="Class-conditional transformer prior: classifier-free guidance, 1 for none, above 1 for "
                             "samples more typical of their class (less varied); default: the library's "
                             "(docs/models.md says how it was chosen).")
    parser.add_argument("--temperature", type=float, default=None,
                        help="Of the prior's sampling: 1 the prior's own distribution, < 1 sharper, > 1 flatter, 0 the "
                             "most likely code; default: the library's.")
    parser.add_argument("--top_k", type=int, default=None,
                        help="Transformer prior: sample among the k most likely codes at each position.")
    parser.add_argument("--top_p", type=float, default=None,
                        help="Transformer prior: sample within the smallest set of codes of probability >= p.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_file", "--output", default="samples.png", help="The PNG to write.")
    parser.add_argument("--overwrite_output_file", "--overwrite", action="store_true",
                        help="Write over an existing --output_file.")
    return parser


def class_rows(requested: list[str] | None, prior, prior_name: str) -> list[int] | None:
    """The classes of `sample --class_label` (numbers, or `all`), checked against `prior`: None for an unconditional
    prior (where no --class_label is allowed)."""
    num_classes = prior.config.num_classes
    if num_classes == 0:
        if requested is not None:
            raise ValueError(f"--class_label needs a class-conditional prior, but {prior_name} was trained without "
                             "labels (num_classes=0); drop --class_label, or train a prior with --class_conditional "
                             "on a labelled dataset.")
        return None
    if requested is None or requested == ["all"]:
        return list(range(num_classes))
    classes = []
    for label in requested:
        if not label.lstrip("-").isdigit():
            raise ValueError(f"--class_label takes class numbers in [0, {num_classes}) or all, got {label!r}.")
        if not 0 <= int(label) < num_classes:
            raise ValueError(f"--class_label must lie in [0, {num_classes}) for this prior, got {label}.")
        classes.append(int(label))
    return classes


def cmd_sample(argv: list[str]) -> None:
    args = parse_command("sample", _sample_parser, argv)
    check_single_process("sample")
    if args.num_samples < 1:
        raise ValueError(f"--num_samples must be a positive integer, got {args.num_samples}")
    if args.num_samples > MAX_GRID_SAMPLES:
        raise ValueError(f"--num_samples must be at most {MAX_GRID_SAMPLES}, got {args.num_samples}: sample writes one "
                         "grid to look at. To measure many samples, use `hf-autoencoders evaluate MODEL --fid "
                         "--num_samples N`.")
    if args.temperature is not None and not 0 <= args.temperature < float("inf"):
        raise ValueError(f"--temperature must be a finite number >= 0 (0 = the most likely code), got "
                         f"{args.temperature}")
    if args.guidance_scale is not None and not 0 <= args.guidance_scale < float("inf"):
        raise ValueError(f"--guidance_scale must be a finite number >= 0 (1 = no guidance), got {args.guidance_scale}")
    if args.top_k is not None and args.top_k < 1:
        raise ValueError(f"--top_k must be a positive integer, got {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ValueError(f"--top_p must lie in (0, 1], got {args.top_p}")
    if args.prior is None and any(getattr(args, name) is not None for name in
                                  ("top_k", "top_p", "class_label", "guidance_scale", "temperature")):
        raise ValueError("--temperature, --top_k, --top_p, --class_label and --guidance_scale apply to sampling with "
                         "a --prior")
    check_output_file(Path(args.output_file), args.overwrite_output_file, (args.model, args.prior), "samples.png")

    import math

    import torch

    from .evaluation.metrics import unit_images
    from .hub import load_model
    from .models.code_priors import default_temperature, resolve_guidance_scale
    from .plots import plot_labelled_rows, plot_samples
    from .training.prior import sample_grid_labels, sampling_title

    model = load_model(args.model, expect="autoencoder")
    generator = torch.Generator().manual_seed(args.seed)
    if args.prior is None:
        images = model.sample(args.num_samples, generator=generator)
        print(f"wrote {plot_samples(unit_images(model, images), args.output_file)}")
        return
    prior = _load_prior(args.prior, model, args.model)
    classes = class_rows(args.class_label, prior, args.prior)
    guidance_scale = resolve_guidance_scale(prior, args.guidance_scale)
    temperature = default_temperature(prior) if args.temperature is None else args.temperature
    knobs = dict(temperature=temperature, top_k=args.top_k, top_p=args.top_p)
    if classes is None:
        images = model.sample(args.num_samples, generator=generator, prior=prior, **knobs)
        print(f"wrote {plot_samples(unit_images(model, images), args.output_file)}")
        return
    per_row = min(8, args.num_samples) if len(classes) == 1 else math.ceil(args.num_samples / len(classes))
    rows = classes * math.ceil(args.num_samples / per_row) if len(classes) == 1 else classes
    labels = torch.tensor(rows).repeat_interleave(per_row)
    images = model.sample(len(labels), generator=generator, prior=prior, class_labels=labels,
                          guidance_scale=guidance_scale, **knobs)
    _, names = sample_grid_labels(prior, prior.config.num_classes)
    names = names if len(names) == prior.config.num_classes else [str(y) for y in range(prior.config.num_classes)]
    title = sampling_title(prior, guidance_scale, temperature, args.top_k, args.top_p)
    path = plot_labelled_rows(unit_images(model, images), [names[y] for y in rows], args.output_file, title=title)
    print(f"wrote {path}")


def _push_parser():
    from .training.arguments import ArgumentParser

    parser = ArgumentParser(prog="hf-autoencoders push", description="Upload a run folder to the Hub.")
    parser.add_argument("folder", help="The --output_dir of a finished training run.")
    parser.add_argument("repo_id", help="The Hub repository, e.g. your-name/vqvae-mnist.")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--token", default=None)
    parser.add_argument("--include_checkpoints", action="store_true",
                        help="Also upload each checkpoint-N's weights, config, code and trainer state (never the "
                             "pickled optimizer, scheduler and RNG states).")
    return parser


def cmd_push(argv: list[str]) -> None:
    args = parse_command("push", _push_parser, argv)
    check_single_process("push")

    from .hub import load_model, push_to_hub

    if (Path(args.folder) / "config.json").is_file():
        load_model(args.folder, "the folder")  # what is pushed must load: its weights match its config, all finite
    print(push_to_hub(args.folder, args.repo_id, token=args.token, private=args.private or None,
                      include_checkpoints=args.include_checkpoints))


def _scaling_factor_parser():
    from .training.arguments import ArgumentParser

    parser = ArgumentParser(
        prog="hf-autoencoders scaling-factor",
        description="Measure the scaling and shift factors of a trained model's latents (1 / std and mean of every "
                    "entry, over the whole training split, streamed), check them on the test split, and write them "
                    "into the model's config.json and card.")
    parser.add_argument("model", help="A trained run folder (its config.json and README.md are updated).")
    parser.add_argument("--dataset_name", default=None,
                        help="The model's training images: a Hub id, a local folder, or nothing for the embedded "
                             "digits. They are resized to the model's image size, as its training run did.")
    parser.add_argument("--image_column", default=None)
    parser.add_argument("--max_train_samples", type=int, default=None,
                        help="Measure on the first N training images only (default: the whole split).")
    parser.add_argument("--max_eval_samples", type=int, default=None, help="Check on the first N test images.")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0, help="Seeds the posterior samples of a VAE.")
    parser.add_argument("--dry_run", action="store_true", help="Print the factors without writing them.")
    return parser


def cmd_scaling_factor(argv: list[str]) -> None:
    args = parse_command("scaling-factor", _scaling_factor_parser, argv)
    folder = Path(args.model)
    if not args.dry_run and not (folder / "config.json").is_file():
        raise ValueError(f"{args.model} is not a local model folder (no config.json): the factors are written into "
                         "it. Pass a run folder, or --dry_run to only print them.")

    from .data import load_image_dataset
    from .evaluation import scaling_factors
    from .hub import load_model, update_card_latent_scale, write_latent_scale
    from .results import dumps

    model = load_model(args.model)
    if not getattr(model.config, "family", None):
        raise ValueError(f"{args.model} holds a {model.config.model_type} model, not an autoencoder: the scaling "
                         "factor is that of an autoencoder's latents.")
    data = load_image_dataset(args.dataset_name, image_size=model.config.image_size,
                              num_channels=model.config.num_channels, image_column=args.image_column,
                              max_samples={"train": args.max_train_samples, "test": args.max_eval_samples})
    factors = scaling_factors(model, data.train, data.splits.get("test"), batch_size=args.batch_size,
                              seed=args.seed)
    if not args.dry_run:
        write_latent_scale(folder, factors)
        update_card_latent_scale(folder, factors, data.name)
    print(dumps(factors))


def _export_parser():
    from .training.arguments import ArgumentParser

    parser = ArgumentParser(prog="hf-autoencoders export",
                            description="Write a trained model in another library's format.")
    parser.add_argument("model", help="A trained model: a run folder or a Hub id.")
    parser.add_argument("output_dir", help="The folder to write (new, or empty).")
    parser.add_argument("--to", choices=["diffusers"], default="diffusers",
                        help="diffusers: an AutoencoderKL (VAE) or VQModel (VQ-VAE) folder that diffusers' "
                             "from_pretrained and pipelines load, carrying scaling_factor and shift_factor. Needs the "
                             "ldm backbone and pixels in [-1, 1].")
    parser.add_argument("--overwrite_output_dir", action="store_true", help="Replace a folder that holds files.")
    return parser


def cmd_export(argv: list[str]) -> None:
    args = parse_command("export", _export_parser, argv)
    from .diffusers_compat import export_to_diffusers
    from .hub import load_model
    from .results import check_destination

    check_destination(args.output_dir, args.overwrite_output_dir)
    path = export_to_diffusers(load_model(args.model), args.output_dir, overwrite=args.overwrite_output_dir)
    print(f"wrote {path}")


def _encode_parser():
    from .training.arguments import ArgumentParser

    parser = ArgumentParser(
        prog="hf-autoencoders encode",
        description="Encode every image of a dataset with a trained model: the scaled latents (z - shift_factor) * "
                    "scaling_factor of a VAE or AE, the code maps of a VQ-VAE, with the labels, as a `datasets` "
                    "dataset (load_from_disk, push_to_hub): the input of a diffusion model or a language model.")
    parser.add_argument("model", help="A trained model: a run folder or a Hub id.")
    parser.add_argument("--dataset_name", default=None,
                        help="A Hub id, a local folder, or nothing for the embedded digits. Its images must have the "
                             "model's size and channels (they are not resized).")
    parser.add_argument("--output_dir", required=True, help="The folder save_to_disk writes (new, or empty).")
    parser.add_argument("--image_column", default=None)
    parser.add_argument("--label_column", default=None)
    parser.add_argument("--max_samples", type=int, default=None, help="Encode the first N images of each split.")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0, help="Seeds the posterior samples of a VAE.")
    parser.add_argument("--overwrite_output_dir", action="store_true", help="Replace a folder that holds files.")
    return parser


def cmd_encode(argv: list[str]) -> None:
    args = parse_command("encode", _encode_parser, argv)
    if args.max_samples is not None and args.max_samples < 1:
        raise ValueError(f"--max_samples must be a positive integer, got {args.max_samples}")
    import tempfile

    from .data import load_image_dataset
    from .evaluation import latents_dataset
    from .evaluation.latents import NO_SCALING_FACTOR
    from .hub import load_model
    from .results import check_destination, write_folder

    check_destination(args.output_dir, args.overwrite_output_dir)
    model = load_model(args.model)
    config = model.config
    if not hasattr(model, "encode_indices") and getattr(config, "scaling_factor", None) is None:
        raise ValueError(NO_SCALING_FACTOR)
    data = load_image_dataset(args.dataset_name, image_column=args.image_column, label_column=args.label_column,
                              max_samples=args.max_samples)
    shape, expected = (data.num_channels, data.image_size), (config.num_channels, config.image_size)
    if shape != expected:
        raise ValueError(f"{data.name}'s images are {shape[0]}x{shape[1]}x{shape[1]} (channels x height x width), "
                         f"but {args.model} encodes {expected[0]}x{expected[1]}x{expected[1]} images; encode a dataset "
                         "of the images it was trained on, at its size and channels.")
    Path(args.output_dir).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=Path(args.output_dir).parent, prefix=".encode-") as work_dir:
        dataset = latents_dataset(model, data.splits, work_dir, label_names=data.label_names,
                                  batch_size=args.batch_size, seed=args.seed)
        path = write_folder(args.output_dir, dataset.save_to_disk, overwrite=args.overwrite_output_dir)
    rows = ", ".join(f"{split}: {len(split_data)}" for split, split_data in dataset.items())
    print(f"wrote {path} ({rows})")


def cmd_train(argv: list[str]) -> None:
    arguments = parse_args(argv)
    from .training.run import run_training

    run_training(*arguments)


def cmd_train_prior(argv: list[str]) -> None:
    arguments = parse_prior_args(argv)
    from .training.prior import run_prior_training

    run_prior_training(*arguments)


def _experiment_parser():
    from .studies import EXPERIMENTS
    from .training.arguments import ArgumentParser

    parser = ArgumentParser(
        prog="hf-autoencoders experiment",
        description="Run a classic autoencoder experiment and write report.md, results.json and PNGs.",
    )
    parser.add_argument("name", choices=list(EXPERIMENTS))
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--budget", choices=["quick", "mlp", "seed"], default=None,
                        help="quick: small MLPs, a first look; mlp (default): MLPs trained for longer; seed: conv "
                             "models trained for epochs over 3 seeds, as the questions were posed (for a GPU, or a "
                             "long run on CPUs). See docs/experiments.md.")
    parser.add_argument("--quick", action="store_true", help="The same as --budget quick.")
    parser.add_argument("--dataset_name", default=None,
                        help="Hub id or local folder (default: the embedded digits), e.g. ../shared/data/mnist or "
                             "../shared/data/cifar10.")
    parser.add_argument("--max_steps", type=int, default=None,
                        help="Training steps per model (overrides the budget's steps or epochs).")
    parser.add_argument("--seed", type=int, default=0, help="The first seed.")
    parser.add_argument("--seeds", type=int, default=None,
                        help="How many seeds (default: the budget's for compare, samples and linear-pca, else 1).")
    parser.add_argument("--resume", action="store_true",
                        help="Continue an interrupted experiment in --output_dir: finished runs are reloaded, not "
                             "trained again.")
    parser.add_argument("--runs_dir", default=None,
                        help="Where trained models are kept (default: OUTPUT_DIR/runs); experiments that share it "
                             "share identical runs (with --resume).")
    parser.add_argument("--overwrite_output_dir", "--overwrite", action="store_true",
                        help="Write into a folder that already holds files.")
    parser.add_argument("--no_progress", dest="progress", action="store_false")
    return parser


def cmd_experiment(argv: list[str]) -> dict:
    from .studies import check_request, run_experiment

    args = parse_command("experiment", _experiment_parser, argv)
    check_single_process("experiment")
    if args.quick and args.budget not in (None, "quick"):
        raise ValueError(f"--quick is --budget quick; it contradicts --budget {args.budget}")
    budget = "quick" if args.quick else args.budget or "mlp"
    for flag in ("max_steps", "seeds"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag} must be a positive integer, got {value}")

    overrides = {} if args.max_steps is None else {"max_steps": args.max_steps}
    check_request(args.name, args.output_dir, budget, overwrite=args.overwrite_output_dir, resume=args.resume,
                  seeds=args.seeds, runs_dir=args.runs_dir, budget_overrides=overrides)
    results = run_experiment(args.name, args.output_dir, budget=budget, dataset_name=args.dataset_name,
                             seed=args.seed, seeds=args.seeds, overwrite=True, resume=args.resume,
                             runs_dir=args.runs_dir, progress=args.progress, **overrides)
    print(f"wrote {Path(args.output_dir) / 'report.md'} and results.json")
    return results


COMMANDS = {
    "train": cmd_train,
    "train-prior": cmd_train_prior,
    "evaluate": cmd_evaluate,
    "sample": cmd_sample,
    "push": cmd_push,
    "scaling-factor": cmd_scaling_factor,
    "export": cmd_export,
    "encode": cmd_encode,
    "experiment": cmd_experiment,
}


def fail(message: str, status: int = 2):
    """End the command with one `error: ...` line on stderr (a message of several lines joined into one)."""
    message = " ".join(line.strip() for line in message.splitlines() if line.strip())
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(status)


def close_process_group() -> None:
    """Destroy torch.distributed's default process group if this process joined one (under `torchrun` or
    `accelerate launch`). A process that exits with a gloo group alive can abort (SIGABRT, "terminate called
    without an active exception") while the interpreter shuts down, after its work is done, and the launcher then
    reports the whole run as failed."""
    dist = sys.modules.get("torch.distributed")  # not imported: no group was joined
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def run_main(command, argv: list[str]) -> None:
    """Run `command(argv)`, turning a user error into one `error: ...` line and exit status 2; a process group it
    joined is closed at the end (`close_process_group`)."""
    try:
        command(argv)
    except USER_ERRORS as err:
        fail(str(err).strip() or type(err).__name__)
    except FloatingPointError as err:  # training diverged: stopped before the update, the last checkpoint is intact
        fail(str(err), 1)
    except ConnectionError as err:  # hub.HubUploadError: an upload failed, what was to be uploaded is intact
        fail(str(err), 1)
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        fail(f"no space left on the device while writing {err.filename or 'a file'}. Free some space, or choose an "
             "--output_dir on another disk; what was already written (checkpoints included) is intact.", 1)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    finally:
        close_process_group()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-V", "--version"):
        print(f"hf-autoencoders {_version()}")
        return
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return
    if argv[0] not in COMMANDS:
        close = difflib.get_close_matches(argv[0], COMMANDS, n=1, cutoff=0.6)
        guess = f"did you mean {close[0]}? " if close else ""
        fail(f"unknown command {argv[0]!r}; {guess}use one of {', '.join(COMMANDS)} (see `hf-autoencoders --help`).")
    run_main(COMMANDS[argv[0]], argv[1:])


if __name__ == "__main__":
    main()
