"""Benchmark of issue 27: generation people want to look at. Class-conditional sampling with classifier-free guidance
(CFG), the transformer prior as the default, and the README's main job.

    python benchmarks/generation.py --only main_job --mnist_data /work/shared/data/mnist \
        > benchmarks/results/generation.json                                     # ~30 min on 2 CPU cores
    python benchmarks/generation.py --only mnist --mnist_vqvae VQVAE_DIR           # hours: see benchmarks/README.md
    python benchmarks/generation.py --only cifar10 --cifar10_vqvae VQVAE_DIR       # hours: see benchmarks/README.md
    python benchmarks/generation.py --smoke                                        # seconds: every part, tiny

Three parts, each printing its figures into one JSON object (stdout; progress goes to stderr):

- **main_job**: the README's main job as it is now (`examples/quickstart.py`: a VQ-VAE, then a class-conditional
  transformer prior) against the main job as it was before (`TODAYS_MAIN_JOB`: the same VQ-VAE, then an
  unconditional PixelCNN prior at the settings of then), each run as a user runs it (a fresh process) for --seeds
  seeds, the two alternating so that they share the machine's load. Wall-clock: the whole process. Sample FD:
  --num_samples samples of each run's prior with its sampling defaults (the classes in turn for a class-conditional prior), decoded
  by its VQ-VAE, against the test split of the embedded digits, in MNIST domain features (a SmallCNN trained on the
  first 10,000 MNIST training images, `evaluation.domain_features`; the digits' own training images where MNIST is
  absent, stated in the JSON). Then the sampling knobs (guidance scale, temperature, top-k, top-p) are swept one at
  a time on the new runs' priors: chosen on samples of one seed, reported on samples of another.
  `main_job_fd_reduction` = 1 - mean FD (new) / mean FD (before); `main_job_time_ratio` = median over seeds of
  wall-clock (new) / wall-clock (before).
- **mnist**: a class-conditional transformer prior (the library's default size) trained for --mnist_prior_steps on
  the codes of --mnist_vqvae; --num_class_samples samples of each digit at each guidance scale, read by the MNIST
  domain classifier: the fraction classified as the digit asked for (`mnist_cfg_accuracy`, at the best scale; at 1.0
  beside it), with sample FD, precision and recall against the MNIST test split.
- **cifar10**: for --seeds seeds, an unconditional and a class-conditional transformer prior trained for the same
  --cifar10_budget seconds each on the codes of --cifar10_vqvae; --num_samples samples of each (the conditional one at
  each guidance scale, classes in turn): sample FD, precision and recall against the CIFAR-10 test split in domain
  features (and Inception's with --inception_weights). `cifar10_conditional_fd_ratio` = mean conditional FD at the
  library's default guidance scale / mean unconditional FD (per scale beside it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import TimeBudget, load_average, log, machine_info, rounded, time_cosine_scheduler

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
GUIDANCE_SCALES = (1.0, 1.5, 2.0, 3.0, 4.0)
# The main job before issue 27 (examples/quickstart.py then): its VQ-VAE and an unconditional PixelCNN prior.
TODAYS_MAIN_JOB = {
    "common": ["--do_train", "--do_eval", "--per_device_train_batch_size", "32", "--logging_steps", "25",
               "--save_strategy", "no"],
    "vqvae": ["--max_steps", "250", "--hidden_size", "32", "--embedding_dim", "16", "--num_embeddings", "128"],
    "prior": ["--prior_type", "pixelcnn", "--max_steps", "300", "--hidden_size", "32", "--num_layers", "4",
              "--kernel_size", "3", "--learning_rate", "3e-3"],
}


# ------------------------------------------------------------------------------------------------ shared pieces


def balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    """Class k at positions k, k + C, k + 2C, ...: the classes in turn."""
    return torch.arange(n) % num_classes


@torch.no_grad()
def prior_samples(vqvae, prior, n: int, seed: int, batch_size: int = 500, **knobs) -> torch.Tensor:
    """n images in [0, 1] from `prior` with `knobs` (class labels in turn for a class-conditional prior)."""
    num_classes = prior.config.num_classes
    labels = balanced_labels(n, num_classes) if num_classes else None
    generator = torch.Generator(device=vqvae.device).manual_seed(seed)
    images = []
    for start in range(0, n, batch_size):
        batch = None if labels is None else labels[start:start + batch_size]
        size = min(batch_size, n - start)
        images.append(vqvae.sample(size, generator, prior=prior, class_labels=batch, **knobs).clamp(0, 1).cpu())
    return torch.cat(images)


def quality(features, real_features: torch.Tensor, images: torch.Tensor) -> dict:
    """FD, precision and recall (and KID, density, coverage) of `images` against the real features."""
    from hf_autoencoders.evaluation import feature_metrics

    return feature_metrics(real_features, features.extract(images))


def mnist_features(mnist_data: str | None, fallback_train, seed: int = 0):
    """Domain features (and their classifier) of MNIST's first 10,000 training images, or of `fallback_train` (an
    `ImageTensorDataset` of 28x28 digits) where MNIST is absent."""
    from hf_autoencoders.data import load_image_dataset
    from hf_autoencoders.evaluation import domain_features

    if mnist_data and Path(mnist_data).is_dir():
        train = load_image_dataset(mnist_data, split="train", max_samples=10_000, progress=False)["train"]
        name = "MNIST (first 10,000 training images)"
    else:
        train, name = fallback_train, "the embedded digits' training images (MNIST absent)"
    features = domain_features(train.images, train.labels, num_classes=10, seed=seed, dataset_name=name,
                               progress=False)
    return features, name


def load_run(folder: Path):
    from hf_autoencoders.hub import load_model

    return load_model(str(folder / "vqvae")), load_model(str(folder / "prior"))


# ---------------------------------------------------------------------------------------------------- main job


def todays_main_job(output_dir: str, seed: int) -> None:
    """The main job of before, through the library's runs (as examples/quickstart.py made it)."""
    from hf_autoencoders.training import parse_args, parse_prior_args, run_training
    from hf_autoencoders.training.prior import run_prior_training

    out, common = Path(output_dir), [*TODAYS_MAIN_JOB["common"], "--seed", str(seed)]
    run_training(*parse_args(["--output_dir", str(out / "vqvae"), *TODAYS_MAIN_JOB["vqvae"], *common],
                             model_type="vqvae"))
    run_prior_training(*parse_prior_args(["--vqvae", str(out / "vqvae"), "--output_dir", str(out / "prior"),
                                          *TODAYS_MAIN_JOB["prior"], *common]))


def timed_process(command: list[str], log_file: Path, threads: int) -> float:
    """Run `command` in a fresh process with `threads` torch threads (its output into `log_file`); its wall-clock
    seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    start = time.perf_counter()
    with open(log_file, "w") as out:
        proc = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}); see {log_file}")
    return seconds


def scored_samples(vqvae, prior, features, real, n: int, seed: int, **knobs) -> dict:
    """FD, precision and recall of n samples against the real features, and, for a class-conditional prior, the
    fraction of samples the features' classifier reads as the class asked for (`class_accuracy`)."""
    from hf_autoencoders.evaluation import classifier_accuracy

    images = prior_samples(vqvae, prior, n, seed, **knobs)
    metrics = quality(features, real, images)
    row = {k: metrics[k] for k in ("fd", "precision", "recall")}
    if prior.config.num_classes:
        row["class_accuracy"] = classifier_accuracy(features.classifier, images,
                                                    balanced_labels(n, prior.config.num_classes))
    return row


def sweep_knobs(runs, features, real, num_samples: int, choose_seed: int, report_seed: int) -> dict:
    """Coordinate search over the sampling knobs on the priors of `runs` [(vqvae, prior)]: the guidance scale at
    temperature 1, then the temperature at the best scale, then the scale again at that temperature, then top-k,
    then top-p. Each setting is scored by the mean FD over the runs on samples of `choose_seed`; the chosen setting
    is then scored on samples of `report_seed` (beside plain sampling: guidance 1, temperature 1)."""
    def mean_scores(knobs, seed):
        rows = [scored_samples(v, p, features, real, num_samples, seed, **knobs) for v, p in runs]
        return {k: statistics.mean(r[k] for r in rows) for k in rows[0]}

    best = {"guidance_scale": 1.0, "temperature": 1.0, "top_k": None, "top_p": None}
    grid = [("guidance_scale", GUIDANCE_SCALES), ("temperature", (0.6, 0.7, 0.8, 0.9, 1.0)),
            ("guidance_scale", GUIDANCE_SCALES), ("top_k", (None, 16, 32, 64)), ("top_p", (None, 0.8, 0.9, 0.95))]
    trials, seen = [], {}
    for knob, values in grid:
        scores = {}
        for value in values:
            knobs = {**best, knob: value}
            key = json.dumps(knobs, sort_keys=True)
            if key not in seen:
                seen[key] = mean_scores(knobs, choose_seed)
                trials.append({**knobs, **seen[key]})
                log(f"main job knobs {knobs}: FD {seen[key]['fd']:.4f}")
            scores[value] = seen[key]
        best[knob] = min(scores, key=lambda v: scores[v]["fd"])
    plain = {"guidance_scale": 1.0, "temperature": 1.0, "top_k": None, "top_p": None}
    return {"trials_on_choice_seed": trials, "best": best, "best_on_report_seed": mean_scores(best, report_seed),
            "plain_on_report_seed": mean_scores(plain, report_seed), "choice_seed": choose_seed,
            "report_seed": report_seed}


def run_main_job(args, work: Path) -> dict:
    from hf_autoencoders.data import ImageCollator, load_image_dataset
    from hf_autoencoders.evaluation import classifier_accuracy
    from hf_autoencoders.models import code_priors

    digits = load_image_dataset(None)
    features, features_name = mnist_features(args.mnist_data, digits.train)
    test = ImageCollator()([digits.test[i] for i in range(len(digits.test))])["pixel_values"]
    real = features.extract(test)
    smoke = ["--vqvae_steps", "2", "--prior_steps", "2"] if args.smoke else []
    before_command = [sys.executable, str(Path(__file__).resolve()), "--todays_main_job"]
    if not (work / "warmup").exists():  # the caches both runs use (decoded images, the card's FD classifier) are built
        log("main job: warm-up run (untimed) ...")
        timed_process([*before_command, str(work / "warmup"), "--smoke"], work / "warmup.log", args.threads)
    rows, new_runs = [], []
    for seed in range(args.seeds):
        before, after = work / f"before-{seed}", work / f"after-{seed}"
        commands = {
            "before": [*before_command, str(before), "--seed", str(seed), *(["--smoke"] if args.smoke else [])],
            "after": [sys.executable, "examples/quickstart.py", "--output_dir", str(after), "--seed", str(seed),
                      *smoke],
        }
        order = ("before", "after") if seed % 2 == 0 else ("after", "before")
        row = {"seed": seed, "load_average_before": load_average()}
        for name in order:
            seconds = work / f"{name}-{seed}.seconds"
            if args.reuse_runs and seconds.is_file():  # a run of an earlier call, timed then
                row[f"{name}_seconds"] = float(seconds.read_text())
                continue
            log(f"main job seed {seed}: {name} ...")
            row[f"{name}_seconds"] = timed_process(commands[name], work / f"{name}-{seed}.log", args.threads)
            seconds.write_text(str(row[f"{name}_seconds"]))
        for name, folder in (("before", before), ("after", after)):
            vqvae, prior = load_run(folder)
            metrics = scored_samples(vqvae, prior, features, real, args.num_samples, seed=0)
            row.update({f"{name}_{k}": v for k, v in metrics.items()})
            row[f"{name}_prior"] = code_priors.prior_type(prior)
            if name == "after":
                new_runs.append((vqvae, prior))
        row["time_ratio"] = row["after_seconds"] / row["before_seconds"]
        log(f"main job seed {seed}: FD {row['before_fd']:.4f} -> {row['after_fd']:.4f}, "
            f"{row['before_seconds']:.0f} s -> {row['after_seconds']:.0f} s")
        rows.append(row)

    def mean(key):
        return statistics.mean(r[key] for r in rows)

    def std(key):
        return statistics.stdev(r[key] for r in rows) if len(rows) > 1 else 0.0

    result = {
        "features": features.description, "features_data": features_name, "real": "digits test split",
        "num_real": len(test), "num_samples": args.num_samples, "runs": rows, "settings_before": TODAYS_MAIN_JOB,
        "real_class_accuracy": classifier_accuracy(features.classifier, test, digits.test.labels),
        "fd_before": mean("before_fd"), "fd_before_std": std("before_fd"),
        "fd_after": mean("after_fd"), "fd_after_std": std("after_fd"),
        "seconds_before": mean("before_seconds"), "seconds_after": mean("after_seconds"),
        "fd_reduction": 1 - mean("after_fd") / mean("before_fd"),
        "time_ratio": statistics.median(r["time_ratio"] for r in rows),
        "sampling_defaults": {"guidance_scale": code_priors.DEFAULT_GUIDANCE_SCALE,
                              "temperature": code_priors.DEFAULT_TEMPERATURE},
    }
    if args.sweep:
        result["knob_sweep"] = sweep_knobs(new_runs, features, real, args.num_samples, choose_seed=1, report_seed=0)
    return result


# ------------------------------------------------------------------------------------------------------ MNIST


def prior_codes(vqvae_path: str, data_path: str | None, cache_dir, max_train=None, max_test=None):
    """The VQ-VAE, its train and test code maps with labels (`CodeDataset`s), and the test images."""
    from hf_autoencoders.data import ImageCollator, load_image_dataset
    from hf_autoencoders.training.prior import CodeDataset, extract_codes, load_vqvae

    vqvae = load_vqvae(vqvae_path)
    config = vqvae.config
    data = load_image_dataset(data_path, image_size=config.image_size, num_channels=config.num_channels,
                              max_samples={"train": max_train, "test": max_test}, progress=False)
    train_codes, train_labels = extract_codes(vqvae, data.train, 500, cache_dir, ImageCollator(), progress=False)
    test_codes, test_labels = extract_codes(vqvae, data.test, 500, cache_dir, ImageCollator(), progress=False)
    return vqvae, data, CodeDataset(train_codes, train_labels), CodeDataset(test_codes, test_labels)


def new_prior(vqvae, num_classes: int, seed: int, **sizes):
    """A transformer prior of the library's default size over the codes of `vqvae`."""
    from transformers import AutoModelForCausalLM

    from hf_autoencoders.models import code_priors

    config = code_priors.transformer_prior_config(
        vqvae.config.num_embeddings, vqvae.config.latent_grid_size, num_classes=num_classes,
        vqvae_identity=vqvae.identity(), **sizes)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def run_mnist(args, work: Path) -> dict:
    from hf_autoencoders.evaluation import classifier_accuracy
    from hf_autoencoders.evaluation.priors import code_nll
    from hf_autoencoders.training.prior import fit_prior

    vqvae, data, train, test = prior_codes(args.mnist_vqvae, args.mnist_data, work / "codes", args.max_train_samples,
                                           args.max_eval_samples)
    features, features_name = mnist_features(args.mnist_data, data.train)
    real = features.extract(data.test.images.float() / 255)
    prior = new_prior(vqvae, 10, args.seed, **({"hidden_size": 16, "num_layers": 1} if args.smoke else {}))
    start = time.perf_counter()
    fit_prior(prior, train, output_dir=work / "mnist-prior", max_steps=args.mnist_prior_steps,
              per_device_train_batch_size=args.batch_size, learning_rate=args.learning_rate, warmup_steps=100,
              seed=args.seed)
    result = {"vqvae": args.mnist_vqvae, "features": features.description, "features_data": features_name,
              "prior_steps": args.mnist_prior_steps, "batch_size": args.batch_size,
              "train_seconds": time.perf_counter() - start, "test_nll_per_code_nats": code_nll(prior.eval(), test),
              "per_guidance_scale": {}}
    n = args.num_class_samples * 10
    labels = balanced_labels(n, 10)
    for scale in GUIDANCE_SCALES:
        images = prior_samples(vqvae, prior, n, args.seed, guidance_scale=scale)
        metrics = quality(features, real, images)
        row = {"accuracy": classifier_accuracy(features.classifier, images, labels),
               **{k: metrics[k] for k in ("fd", "precision", "recall")}}
        result["per_guidance_scale"][str(scale)] = row
        log(f"mnist guidance {scale}: accuracy {row['accuracy']:.3f}, FD {row['fd']:.3f}")
    by_scale = result["per_guidance_scale"]
    best = max(by_scale, key=lambda s: by_scale[s]["accuracy"])
    result["per_temperature_at_best_scale"] = {}
    for temperature in (0.7, 0.8, 0.9, 1.0):
        images = prior_samples(vqvae, prior, n, args.seed, guidance_scale=float(best), temperature=temperature)
        metrics = quality(features, real, images)
        result["per_temperature_at_best_scale"][str(temperature)] = {
            "accuracy": classifier_accuracy(features.classifier, images, labels),
            **{k: metrics[k] for k in ("fd", "precision", "recall")}}
    result.update(best_guidance_scale=float(best), accuracy_at_best=by_scale[best]["accuracy"],
                  accuracy_at_1=by_scale["1.0"]["accuracy"],
                  real_test_accuracy=classifier_accuracy(features.classifier, data.test.images.float() / 255,
                                                         data.test.labels))
    return result


# --------------------------------------------------------------------------------------------------- CIFAR-10


def train_for(prior, codes, seconds: float, args, output_dir: Path) -> int:
    """Train `prior` with `PriorTrainer` (AdamW, a cosine over the elapsed share of the budget) for `seconds`."""
    from hf_autoencoders.training import training_arguments
    from hf_autoencoders.training.prior import PriorTrainer, prior_collator

    budget = TimeBudget(seconds)
    optimizer = torch.optim.AdamW(prior.parameters(), lr=args.learning_rate, weight_decay=0.0)
    training_args = training_arguments(output_dir, per_device_train_batch_size=args.batch_size,
                                       num_train_epochs=100_000, seed=args.seed, logging_steps=200)
    trainer = PriorTrainer(model=prior, args=training_args, data_collator=prior_collator(prior), train_dataset=codes,
                           callbacks=[budget], optimizers=(optimizer, time_cosine_scheduler(optimizer, budget)))
    trainer.train()
    return trainer.state.global_step


def run_cifar10(args, work: Path) -> dict:
    from hf_autoencoders.data import load_image_dataset
    from hf_autoencoders.evaluation import domain_features, inception_features
    from hf_autoencoders.models import code_priors
    from hf_autoencoders.evaluation.priors import code_nll
    from hf_autoencoders.training.prior import CodeDataset

    vqvae, data, train, test = prior_codes(args.cifar10_vqvae, args.cifar10_data, work / "codes",
                                           args.max_train_samples, args.max_eval_samples)
    train_10k = data.train if len(data.train) <= 10_000 else load_image_dataset(
        args.cifar10_data, split="train", max_samples=10_000, progress=False)["train"]
    extractors = [domain_features(train_10k.images, train_10k.labels, num_classes=data.num_labels, seed=0,
                                  dataset_name="CIFAR-10", progress=False)]
    if args.inception_weights:
        extractors.append(inception_features(args.inception_weights))
    test_images = data.test.images.float() / 255
    reals = {f.name: f.extract(test_images) for f in extractors}
    num_classes = data.num_labels or 10
    sizes = {"hidden_size": 16, "num_layers": 1} if args.smoke else {}

    def scores(images):
        row = {}
        for f in extractors:
            metrics = quality(f, reals[f.name], images)
            row.update({f"{k}_{f.name}": metrics[k] for k in ("fd", "precision", "recall")})
        return row

    seeds = []
    for seed in range(args.seed, args.seed + args.seeds):
        row = {"seed": seed}
        for kind in ("unconditional", "conditional"):
            prior = new_prior(vqvae, num_classes if kind == "conditional" else 0, seed, **sizes)
            codes = train if kind == "conditional" else CodeDataset(train.codes)
            steps = train_for(prior, codes, args.cifar10_budget, args, work / f"cifar-{kind}-{seed}")
            scored = test if kind == "conditional" else CodeDataset(test.codes)
            row[kind] = {"steps": steps, "test_nll_per_code_nats": code_nll(prior.eval(), scored)}
            if kind == "unconditional":
                row[kind].update(scores(prior_samples(vqvae, prior, args.num_samples, seed)))
            else:
                row[kind]["per_guidance_scale"] = {
                    str(scale): scores(prior_samples(vqvae, prior, args.num_samples, seed, guidance_scale=scale))
                    for scale in GUIDANCE_SCALES}
            log(f"cifar10 seed {seed} {kind}: {steps} steps, NLL {row[kind]['test_nll_per_code_nats']:.3f}")
        seeds.append(row)

    def mean(values):
        return statistics.mean(values)

    unconditional = mean(r["unconditional"]["fd_domain"] for r in seeds)
    by_scale = {str(s): mean(r["conditional"]["per_guidance_scale"][str(s)]["fd_domain"] for r in seeds)
                for s in GUIDANCE_SCALES}
    default = str(float(code_priors.DEFAULT_GUIDANCE_SCALE))
    if default not in by_scale:
        default = "1.0"
    return {"vqvae": args.cifar10_vqvae, "budget_seconds_per_prior": args.cifar10_budget, "seeds": seeds,
            "num_samples": args.num_samples, "features": [f.description for f in extractors],
            "fd_domain_unconditional": unconditional, "fd_domain_conditional_by_guidance_scale": by_scale,
            "default_guidance_scale": float(default),
            "conditional_fd_ratio": by_scale[default] / unconditional,
            "conditional_fd_ratio_by_guidance_scale": {s: v / unconditional for s, v in by_scale.items()},
            "conditional_below_unconditional_every_seed": all(
                r["conditional"]["per_guidance_scale"][default]["fd_domain"] < r["unconditional"]["fd_domain"]
                for r in seeds)}


# ------------------------------------------------------------------------------------------------------ smoke


def smoke_vqvae(folder: Path, image_size: int, num_channels: int) -> str:
    """A tiny VQ-VAE (k-means-initialised codebook, untrained otherwise) on the embedded digits, saved in `folder`."""
    import hf_autoencoders as H
    from hf_autoencoders.data import ImageCollator, load_image_dataset

    digits = load_image_dataset(None, image_size=image_size, num_channels=num_channels)
    torch.manual_seed(0)
    vqvae = H.VQVAEModel(H.VQVAEConfig(image_size=image_size, num_channels=num_channels, hidden_size=8,
                                       num_embeddings=16, embedding_dim=4, num_residual_blocks=1, kmeans_init=True))
    with torch.no_grad():
        vqvae(ImageCollator()([digits.train[i] for i in range(128)])["pixel_values"])
    vqvae.eval().save_pretrained(folder)
    return str(folder)


# ------------------------------------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=["main_job", "mnist", "cifar10"], default=None,
                        help="The parts to run (default: every part whose inputs are given).")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_samples", type=int, default=2000, help="Samples per FD (main job, CIFAR-10).")
    parser.add_argument("--no_sweep", dest="sweep", action="store_false", help="Main job: skip the knob sweep.")
    parser.add_argument("--reuse_runs", action="store_true",
                        help="Main job: keep the runs (and their times) that an earlier call left in --work_dir, and "
                             "score them again (e.g. with new sampling defaults).")
    parser.add_argument("--mnist_data", default=str(SHARED / "mnist"))
    parser.add_argument("--mnist_vqvae", default=None, help="A VQ-VAE trained on MNIST.")
    parser.add_argument("--mnist_prior_steps", type=int, default=5000)
    parser.add_argument("--num_class_samples", type=int, default=100, help="MNIST: samples per digit and scale.")
    parser.add_argument("--cifar10_data", default=str(SHARED / "cifar10"))
    parser.add_argument("--cifar10_vqvae", default=None, help="A VQ-VAE trained on CIFAR-10.")
    parser.add_argument("--cifar10_budget", type=float, default=600.0, help="Training seconds per CIFAR-10 prior.")
    parser.add_argument("--inception_weights", default=None, help="CIFAR-10: also FD in InceptionV3 features.")
    parser.add_argument("--batch_size", type=int, default=128, help="Of the MNIST and CIFAR-10 priors.")
    parser.add_argument("--learning_rate", type=float, default=1e-3, help="Of the MNIST and CIFAR-10 priors.")
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--max_eval_samples", type=int, default=None)
    parser.add_argument("--work_dir", default=None, help="Where runs and codes go (default: a temporary folder).")
    parser.add_argument("--smoke", action="store_true", help="Every part, tiny: seconds.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--todays_main_job", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.todays_main_job:  # one run of the main job of before, in its own process
        if args.smoke:
            TODAYS_MAIN_JOB["vqvae"][1] = TODAYS_MAIN_JOB["prior"][3] = "2"
        todays_main_job(args.todays_main_job, args.seed)
        return {}
    command = "python benchmarks/generation.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results = {"command": command.strip(), "machine": machine_info()}
    with contextlib.redirect_stdout(sys.stderr), tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        parts = args.only or [part for part, given in (("main_job", True), ("mnist", args.mnist_vqvae),
                                                       ("cifar10", args.cifar10_vqvae)) if given]
        if args.smoke:
            args.seeds, args.num_samples, args.num_class_samples = 1, 64, 6
            args.mnist_prior_steps, args.cifar10_budget, args.sweep = 3, 1.0, False
            args.max_train_samples, args.max_eval_samples = 256, 64
            args.mnist_data = args.cifar10_data = None
            args.mnist_vqvae = smoke_vqvae(work / "vqvae-digits", 28, 1)
            args.cifar10_vqvae = smoke_vqvae(work / "vqvae-rgb", 32, 3)
            parts = args.only or ["main_job", "mnist", "cifar10"]
        for part, run in (("main_job", run_main_job), ("mnist", run_mnist), ("cifar10", run_cifar10)):
            if part in parts:
                start = time.perf_counter()
                (work / part).mkdir(parents=True, exist_ok=True)
                results[part] = run(args, work / part)
                results[part]["seconds"] = time.perf_counter() - start
    main_job, mnist, cifar10 = (results.get(k, {}) for k in ("main_job", "mnist", "cifar10"))
    results.update(
        main_job_fd_reduction=main_job.get("fd_reduction"), main_job_time_ratio=main_job.get("time_ratio"),
        mnist_cfg_accuracy=mnist.get("accuracy_at_best"), mnist_cfg_accuracy_at_1=mnist.get("accuracy_at_1"),
        cifar10_conditional_fd_ratio=cifar10.get("conditional_fd_ratio"))
    results["machine"]["load_average_end"] = load_average()
    print(json.dumps(rounded(results), indent=1))
    return results


if __name__ == "__main__":
    main()
