"""Benchmark of issue 25: the tokenizer recipe (perceptual + adversarial terms with the adaptive weight, and an EMA of
the weights) against pixel loss alone, CIFAR-10 VQ-VAEs at equal steps, over several seeds.

    OMP_NUM_THREADS=1 python benchmarks/tokenizer_recipe.py --seeds 0,1,2 \
        --output benchmarks/results/tokenizer_recipe.json
    python benchmarks/tokenizer_recipe.py --smoke       # seconds: the embedded digits, tiny models, a few steps
    python benchmarks/tokenizer_recipe.py --merge a.json b.json timing.json   # runs made in separate processes

Model: a VQ-VAE with the conv backbone (`--hidden_size`, the library's default width otherwise), an 8x8 code map
(two stride-2 stages on 32x32 images) and K = 1024 codes of d = 64, the library's defaults otherwise (EMA codebook,
k-means initialisation, dead-code restarts, Gaussian likelihood).

Arms, each trained for `--steps` steps of batch `--batch_size` (Adam, cosine schedule, the library Trainer) with every
seed of `--seeds`:
- `pixel`: the model's own loss alone (squared error + VQ terms);
- `recipe`: + `--perceptual_weight` x the perceptual distance (`--perceptual_network`, the library's default) +
  the adversarial term (PatchGAN, hinge, the adaptive weight, `--disc_weight`, from `--disc_start`) + an EMA of the
  weights (`--use_ema`, decay `--model_ema_decay`); the model it saves is the EMA;
- `perceptual_<network>` for each of `--perceptual_networks`: the perceptual term alone, with that network: how well
  each offline network serves, the measurement behind the default.

Evaluation on the first `--test_images` test images: PSNR and SSIM (`evaluation.evaluate`), the perceptual distance
on each offline network (each arm is judged by the others' networks too), and the Fréchet distance of the
reconstructions to the images on the domain features (`evaluation.domain_features`: a SmallCNN trained on the first
10,000 labelled training images with seed 0; the perceptual networks have their own seed, `PERCEPTUAL_SEED`). The
recipe's trained (raw) weights are evaluated beside its EMA, and its collapse guard's events counted.

Headline figures (means over seeds):
- `fd_reduction` = 1 - FD(recipe, the saved EMA) / FD(pixel); `fd_reduction_raw` with the recipe's raw weights;
- `psnr_cost_db` = PSNR(pixel) - PSNR(recipe); `collapsed_seeds`: recipe seeds whose guard recorded a collapse or
  whose training diverged;
- `ema_fd_ratio` = FD(recipe EMA) / FD(recipe raw);
- `step_cost_ratio` = the median step time of the recipe (after `disc_start`: discriminator on) / the pixel arm's,
  measured in `--timing_rounds` alternated rounds of `--timing_steps` steps each (`evaluation.timing.alternate`),
  on this machine's CPU (or `--device`); `--timing_only` measures it alone, without the training runs.

Prints one JSON object (stdout; progress goes to stderr) holding the command that made it.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import load_average, machine_info, rounded

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TARGETS = {"fd_reduction": 0.25, "psnr_cost_db": 1.0, "collapsed_seeds": 0, "ema_fd_ratio": 1.0,
           "step_cost_ratio": 2.0}
FEATURE_IMAGES = 10_000  # labelled training images of the domain features and the offline perceptual networks


def log(message: str) -> None:
    print(f"[tokenizer_recipe {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse(argv=None):
    from hf_autoencoders.training.arguments import AutoencoderTrainingArguments as A

    defaults = A.__dataclass_fields__
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(SHARED / "cifar10"), help="CIFAR-10 in the Hub parquet layout.")
    parser.add_argument("--smoke", action="store_true", help="The embedded digits, tiny models, a few steps.")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=2346, help="Optimizer steps of every run (default: 6 epochs).")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--hidden_size", type=int, default=None, help="Conv width (default: the config's).")
    parser.add_argument("--num_embeddings", type=int, default=1024)
    parser.add_argument("--embedding_dim", type=int, default=64)
    parser.add_argument("--train_images", type=int, default=None, help="Default: the whole training split.")
    parser.add_argument("--test_images", type=int, default=10_000)
    parser.add_argument("--perceptual_weight", type=float, default=1.0)
    parser.add_argument("--perceptual_network", default=defaults["perceptual_network"].default)
    parser.add_argument("--disc_weight", type=float, default=0.5)
    parser.add_argument("--disc_start", type=int, default=None,
                        help="Default: the library's default (halfway through the steps).")
    parser.add_argument("--disc_channels", type=int, default=defaults["disc_channels"].default)
    parser.add_argument("--model_ema_decay", type=float, default=defaults["model_ema_decay"].default)
    parser.add_argument("--gan_guard_action", default=defaults["gan_guard_action"].default,
                        help="What the recipe's collapse guard does (warn, lower, stop).")
    parser.add_argument("--perceptual_networks", default="rotation,domain",
                        help="Perceptual-only arms, one per offline network (empty: none).")
    parser.add_argument("--arms", default=None, help="Train only these arms (comma-separated; default: all).")
    parser.add_argument("--timing_only", action="store_true",
                        help="Measure only the step cost ratio of the pixel and recipe arms (no training runs).")
    parser.add_argument("--timing_rounds", type=int, default=5)
    parser.add_argument("--timing_steps", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache_dir", default=None, help="Where the trained feature networks are kept.")
    parser.add_argument("--output", default=None, help="Also write the JSON here.")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="Combine earlier outputs of this script (seeds or arms run in separate processes, and a "
                             "--timing_only output for the step cost) into one result, without training.")
    return parser.parse_args(argv)


def build_model(args, data, seed: int):
    from hf_autoencoders import VQVAEConfig, VQVAEModel

    fields = dict(image_size=data.image_size, num_channels=data.num_channels, backbone="conv",
                  num_embeddings=args.num_embeddings, embedding_dim=args.embedding_dim)
    if args.hidden_size:
        fields["hidden_size"] = args.hidden_size
    torch.manual_seed(seed)
    return VQVAEModel(VQVAEConfig(**fields))


def arm_settings(args) -> dict[str, dict]:
    """The training arguments of each arm, on top of the shared ones."""
    recipe = dict(perceptual_weight=args.perceptual_weight, perceptual_network=args.perceptual_network,
                  disc_weight=args.disc_weight, disc_channels=args.disc_channels, use_ema=True,
                  model_ema_decay=args.model_ema_decay, gan_guard_action=args.gan_guard_action)
    if args.disc_start is not None:
        recipe["disc_start"] = args.disc_start
    arms = {"pixel": {}, "recipe": recipe}
    for name in filter(None, args.perceptual_networks.split(",")):
        arms[f"perceptual_{name}"] = dict(perceptual_weight=args.perceptual_weight, perceptual_network=name)
    if args.arms:
        arms = {name: arms[name] for name in args.arms.split(",")}
    return arms


def trainer_for(model, fields: dict, args, train, guard_set, networks, output_dir, seed: int, steps: int,
                callbacks=None):
    from transformers.trainer_callback import PrinterCallback

    from hf_autoencoders.data import ImageCollator
    from hf_autoencoders.training import AutoencoderTrainer
    from hf_autoencoders.training.arguments import training_arguments

    training_args = training_arguments(output_dir, max_steps=steps, per_device_train_batch_size=args.batch_size,
                                       learning_rate=args.learning_rate, seed=seed,
                                       use_cpu=args.device == "cpu", **fields)
    network = networks.get(fields.get("perceptual_network")) if fields.get("perceptual_weight") else None
    trainer = AutoencoderTrainer(model=model, args=training_args, data_collator=ImageCollator(), train_dataset=train,
                                 eval_dataset=guard_set, perceptual_network=network, callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # stdout holds the JSON only
    return trainer


def measure(model, test_x, networks: dict, features, seed: int) -> dict:
    from hf_autoencoders.evaluation import evaluate, quality_metrics

    metrics = {}
    for name, network in networks.items():
        results = evaluate(model, test_x, perceptual=network, seed=seed, progress=False)
        metrics[f"perceptual_{name}"] = results[f"perceptual_{name}"]
    metrics.update({k: results[k] for k in ("psnr", "ssim", "mse", "codebook_usage", "codebook_perplexity")})
    quality = quality_metrics(model, test_x, features=features, samples=False, seed=seed, progress=False)
    metrics["reconstruction_fd_domain"] = quality["reconstruction_fd_domain"]
    metrics["reconstruction_kid_domain"] = quality["reconstruction_kid_domain"]
    return metrics


def train_arm(name, fields, args, data, train, test_x, guard_set, networks, features, seed) -> dict:
    from hf_autoencoders.training.trainer import TrainingDivergedError

    model = build_model(args, data, seed).to(args.device)
    start = time.time()
    with tempfile.TemporaryDirectory() as scratch:
        trainer = trainer_for(model, fields, args, train, guard_set, networks, scratch, seed, args.steps)
        try:
            trainer.train()
            diverged = False
        except TrainingDivergedError as err:
            log(f"{name} seed {seed} diverged: {err}")
            diverged = True
    row = {"arm": name, "seed": seed, "train_seconds": time.time() - start, "diverged": diverged,
           "steps": trainer.state.global_step}
    recipe = trainer.recipe
    if recipe is not None:
        row.update({k: v for k, v in recipe.description().items() if not k.endswith("description")})
    model.eval()
    row.update(measure(model, test_x, networks, features, seed))  # the model the run saves (with an EMA: the EMA)
    if recipe is not None and recipe.trained_weights is not None:
        model.load_state_dict(recipe.trained_weights)
        row["raw"] = measure(model, test_x, networks, features, seed)
    return row


def step_times(args, data, train, guard_set, networks, arms: dict) -> dict:
    """Median seconds per optimizer step of the pixel arm and of the recipe arm with its discriminator on, taken in
    alternated rounds (`evaluation.timing.alternate`), each round a fresh short run whose first steps are not timed."""
    from hf_autoencoders.evaluation.timing import StepTimer, alternate

    skip = 2
    steps = skip + args.timing_steps + 1

    def timed(fields):
        def run():
            timer = StepTimer()
            model = build_model(args, data, 0).to(args.device)
            with tempfile.TemporaryDirectory() as scratch:
                fields_now = {**fields, "disc_start": 0} if fields.get("disc_weight") else fields
                trainer_for(model, {**fields_now, "gan_guard_steps": 10**9}, args, train, guard_set, networks,
                            scratch, 0, steps, callbacks=[timer]).train()
            return timer.intervals(skip)
        return run

    results = alternate({"pixel": timed(arms["pixel"]), "recipe": timed(arms["recipe"])}, args.timing_rounds)
    medians = {name: statistics.median([t for times in rounds for t in times]) for name, rounds in results.items()}
    return {"pixel_step_seconds": medians["pixel"], "recipe_step_seconds": medians["recipe"],
            "step_cost_ratio": medians["recipe"] / medians["pixel"], "timing_rounds": args.timing_rounds,
            "timing_steps_per_round": args.timing_steps}


def mean(rows, key, arm) -> float:
    values = [r[key] if "." not in key else r[key.split(".")[0]][key.split(".")[1]] for r in rows if r["arm"] == arm
              and not r["diverged"]]
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.mean(values) if values else float("nan")


def std(rows, key, arm) -> float:
    values = [r[key] for r in rows if r["arm"] == arm and not r["diverged"]]
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(result: dict, rows: list[dict], arms, networks) -> None:
    """The means over seeds of each arm (`summary`) and the headline figures, into `result`."""
    summary = {}
    for name in arms if rows else []:
        summary[name] = {key: mean(rows, key, name) for key in
                         ("psnr", "ssim", "reconstruction_fd_domain", *(f"perceptual_{n}" for n in networks))}
        summary[name].update(psnr_std=std(rows, "psnr", name), fd_std=std(rows, "reconstruction_fd_domain", name))
        if name == "recipe":
            summary[name].update(raw_psnr=mean(rows, "raw.psnr", name),
                                 raw_reconstruction_fd_domain=mean(rows, "raw.reconstruction_fd_domain", name))
    result["summary"] = summary
    if rows and "pixel" in arms and "recipe" in arms:
        pixel, recipe = summary["pixel"], summary["recipe"]
        recipe_rows = [r for r in rows if r["arm"] == "recipe"]
        result.update(
            fd_reduction=1 - recipe["reconstruction_fd_domain"] / pixel["reconstruction_fd_domain"],
            fd_reduction_raw=1 - recipe["raw_reconstruction_fd_domain"] / pixel["reconstruction_fd_domain"],
            psnr_cost_db=pixel["psnr"] - recipe["psnr"],
            collapsed_seeds=sum(r["diverged"] or r.get("gan_collapse_events", 0) > 0 for r in recipe_rows),
            ema_fd_ratio=recipe["reconstruction_fd_domain"] / recipe["raw_reconstruction_fd_domain"],
        )


def targets_met(result: dict) -> dict:
    return {name: (result[name] >= target if name == "fd_reduction" else result[name] <= target)
            for name, target in TARGETS.items() if name in result}


def merge(paths: list[str], command: str) -> dict:
    """One result from earlier outputs of this script (seeds or arms run in separate processes): each arm takes
    the settings of the last file that trained it and the runs of every file that trained it with those settings;
    the step times come from the last file that has them (a `--timing_only` output)."""
    results = [json.loads(Path(path).read_text()) for path in paths]
    trained = [r for r in results if r.get("runs")]
    if not trained:
        raise SystemExit("error: --merge needs at least one output with training runs")
    for key in ("data", "steps", "batch_size", "train_images", "test_images", "learning_rate", "domain_features"):
        values = {json.dumps(r[key]) for r in trained}
        if len(values) > 1:
            raise SystemExit(f"error: the outputs to merge differ in {key}: {sorted(values)}")
    arms = {}
    for r in trained:
        arms.update(r["arms"])
    rows = [row for r in trained for row in r["runs"] if r["arms"].get(row["arm"]) == arms[row["arm"]]]
    result = {key: value for key, value in trained[-1].items()
              if key not in ("runs", "summary", "seeds", *TARGETS, "fd_reduction_raw", "targets_met")}
    result.update(command=command, merged=list(paths), arms=arms, seeds=sorted({row["seed"] for row in rows}))
    result["runs"] = rows
    summarize(result, rows, arms, trained[-1]["perceptual_networks"])
    timed = [r for r in results if "step_cost_ratio" in r]
    if timed:
        result.update({key: timed[-1][key] for key in ("pixel_step_seconds", "recipe_step_seconds",
                                                         "step_cost_ratio", "timing_rounds", "timing_steps_per_round")})
        result["step_times_from"] = timed[-1]["command"]
    result["targets_met"] = targets_met(result)
    return rounded(result, 5)


def main(argv=None) -> dict:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    from hf_autoencoders.data import ImageTensorDataset, load_image_dataset
    from hf_autoencoders.evaluation import domain_features
    from hf_autoencoders.evaluation.perceptual import offline_perceptual_network

    command = "python benchmarks/tokenizer_recipe.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.merge:
        from hf_autoencoders.results import dumps, write_json

        result = merge(args.merge, command)
        if args.output:
            write_json(args.output, result)
        print(dumps(result))
        return result
    if args.smoke:
        args.steps, args.batch_size, args.num_embeddings, args.embedding_dim = 6, 32, 32, 16
        args.hidden_size, args.test_images, args.train_images = 16, 128, 512
        args.timing_rounds, args.timing_steps, args.disc_channels = 1, 2, 8
        args.disc_start = 3 if args.disc_start is None else args.disc_start
        args.seeds = args.seeds if "--seeds" in (argv or sys.argv) else "0"
    if not args.smoke and not Path(args.data).is_dir():
        raise SystemExit(f"error: --data {args.data} is not a folder; pass CIFAR-10 in the Hub parquet layout, or --smoke")
    data_path = None if args.smoke else args.data
    data = load_image_dataset(data_path, progress=False)
    n_train = len(data.train) if args.train_images is None else min(args.train_images, len(data.train))
    train = ImageTensorDataset(data.train.images[:n_train], data.train.labels[:n_train])
    test_images = data.test.images[: args.test_images]
    test_x = test_images.float() / 255
    guard_set = ImageTensorDataset(test_images[:64])  # the collapse guard's held-out batch
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = "the step cost only" if args.timing_only else f"seeds {seeds}, {args.steps} steps"
    log(f"{data.name}: {n_train} training images, {len(test_x)} test images; {runs}")

    feature_images = data.train.images[:FEATURE_IMAGES].float() / 255
    feature_labels = data.train.labels[:FEATURE_IMAGES]
    epochs = 1 if args.smoke else 5
    features = domain_features(feature_images, feature_labels, num_classes=data.num_labels, seed=0, epochs=epochs,
                               cache_dir=args.cache_dir, dataset_name=data.name, progress=False, device=args.device)
    arms = arm_settings(args)
    names = sorted({f.get("perceptual_network") for f in arms.values() if f.get("perceptual_weight")}
                   | {"rotation", "domain"})
    networks = {}
    for name in names:
        log(f"perceptual network {name}")
        networks[name] = offline_perceptual_network(name, feature_images, feature_labels, num_classes=data.num_labels,
                                                    epochs=epochs, cache_dir=args.cache_dir, dataset_name=data.name,
                                                    device=args.device, progress=False)

    result = {"command": command, "machine": machine_info(), "data": data.name, "train_images": n_train,
              "test_images": len(test_x), "seeds": seeds, "steps": args.steps, "batch_size": args.batch_size,
              "learning_rate": args.learning_rate, "arms": {k: {**v} for k, v in arms.items()},
              "domain_features": features.description,
              "perceptual_networks": {k: v.description for k, v in networks.items()}, "targets": TARGETS}
    if args.timing_only:
        log("step times, alternated")
        result.update(step_times(args, data, train, guard_set, networks, arm_settings(args)))
        result["targets_met"] = targets_met(result)
        seeds = []
    rows = []
    for seed in seeds:
        for name, fields in arms.items():
            log(f"{name}, seed {seed} (load {load_average()})")
            row = train_arm(name, fields, args, data, train, test_x, guard_set, networks, features, seed)
            log(f"  PSNR {row['psnr']:.2f} dB, FD {row['reconstruction_fd_domain']:.3f}, "
                f"{row['train_seconds']:.0f} s")
            rows.append(row)
    result["runs"] = rows
    summarize(result, rows, arms, networks)
    if rows and "pixel" in arms and "recipe" in arms:
        log("step times, alternated")
        result.update(step_times(args, data, train, guard_set, networks, arms))
        result["targets_met"] = targets_met(result)
    result["machine"]["load_average_end"] = load_average()
    result = rounded(result, 5)
    from hf_autoencoders.results import dumps, write_json

    if args.output:
        write_json(args.output, result)
    print(dumps(result))
    return result


if __name__ == "__main__":
    main()
