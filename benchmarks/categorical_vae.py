"""Does a VAE's categorical latent find the digits? Score function vs Gumbel-softmax on MNIST, same budget.

A VAE with a categorical latent c (10 categories) and a small continuous latent z is trained twice on the MNIST
training set, with the same architecture, seed, number of steps, batch size and latent samples; only the gradient
estimator of the categorical part differs: "score_function" (REINFORCE with a leave-one-out baseline over the latent
samples; a moving average with one sample) or "gumbel_softmax" (relaxed sample, temperature tau). The continuous
part is reparameterized in both.

On the test set it reports:
- cluster accuracy: argmax_c q(c|x) as a cluster, matched to the labels by the best one-to-one assignment of the
  10 categories to the 10 digits (Hungarian algorithm, scipy's linear_sum_assignment), the standard "unsupervised
  clustering accuracy"; also the many-to-one "majority" accuracy (each category takes its most frequent label);
- the test ELBO in nats per image, E_q[log p(x|c, z)] - KL(q(c, z|x) || p(c, z)) with c drawn one-hot, and the
  categorical KL (log 10 = 2.30 nats at most) and the number of categories in use.

    python benchmarks/categorical_vae.py --quick
    python benchmarks/categorical_vae.py > categorical_vae_full.json

Prints one JSON object; {"skipped": reason} when the data folder is absent.
"""

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_DATA = REPO.parent / "shared" / "data" / "mnist"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="MNIST folder (Hub parquet layout).")
    parser.add_argument("--quick", action="store_true", help="A short run (about 1-2 minutes).")
    parser.add_argument("--steps", type=int, default=None, help="Training steps per estimator.")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--latent-dim", type=int, default=8, help="Size of the continuous part z.")
    parser.add_argument("--num-categories", type=int, default=10)
    parser.add_argument("--num-latent-samples", type=int, default=4, help="Latent samples per image (both runs).")
    parser.add_argument("--gumbel-temperature", type=float, default=0.5)
    parser.add_argument("--likelihood", default="bernoulli", help="bernoulli (binarized pixels) or gaussian.")
    parser.add_argument("--estimators", default="score_function,gumbel_softmax")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared CPU).")
    return parser.parse_args(argv)


def cluster_accuracy(clusters: np.ndarray, labels: np.ndarray) -> dict:
    """Best one-to-one (Hungarian) and many-to-one (majority) accuracy of cluster ids against labels."""
    counts = np.zeros((clusters.max() + 1, labels.max() + 1), dtype=np.int64)
    np.add.at(counts, (clusters, labels), 1)
    rows, cols = linear_sum_assignment(-counts)
    return {
        "hungarian": float(counts[rows, cols].sum() / len(labels)),
        "majority": float(counts.max(1).sum() / len(labels)),
        "categories_used": int((counts.sum(1) > 0).sum()),
    }


@torch.no_grad()
def evaluate(model, images: torch.Tensor, labels: torch.Tensor, binarize: bool, batch_size: int = 1000) -> dict:
    from hf_autoencoders.data import ImageCollator

    collator = ImageCollator(binarize=binarize)
    model.eval()
    clusters, elbos, categorical_kls, probs = [], [], [], []
    generator = torch.Generator().manual_seed(0)
    for start in range(0, len(images), batch_size):
        x = collator(list(images[start : start + batch_size]))["pixel_values"]
        posterior = model.encode(x).latent_dist
        clusters.append(posterior.probs.argmax(-1))
        elbos.append(model.log_likelihood(x, posterior.sample(generator=generator)) - posterior.kl())
        categorical_kls.append(posterior.categorical_kl())
        probs.append(posterior.probs)
    result = cluster_accuracy(torch.cat(clusters).numpy(), labels.numpy())
    probs = torch.cat(probs)

    def entropy(p):
        return -(p * p.clamp(min=1e-12).log()).sum(-1)

    result.update(
        test_elbo=torch.cat(elbos).mean().item(),
        test_categorical_kl=torch.cat(categorical_kls).mean().item(),
        # I(x; c) = H(E_x pi(x)) - E_x H(pi(x)) in nats (log K at most): how much the category says about the image
        categorical_mutual_information=(entropy(probs.mean(0)) - entropy(probs).mean()).item(),
    )
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)
    if not Path(args.data).is_dir():
        result = {"skipped": f"data folder {args.data} not found"}
        print(json.dumps(result))
        return result
    torch.set_num_threads(args.threads)
    import transformers

    import hf_autoencoders  # noqa: F401
    from hf_autoencoders import VAEConfig, VAEModel
    from hf_autoencoders.data import ImageCollator, load_image_dataset
    from hf_autoencoders.training import fit

    transformers.utils.logging.set_verbosity_error()
    steps = args.steps or (200 if args.quick else 2500)
    baseline = "leave_one_out" if args.num_latent_samples >= 2 else "moving_average"
    data = load_image_dataset(args.data, progress=False)
    test_images, test_labels = data.test.images, data.test.labels
    if args.quick:
        test_images, test_labels = test_images[:2000], test_labels[:2000]
    binarize = args.likelihood == "bernoulli"
    results = {
        "benchmark": "categorical_vae",
        "data": args.data,
        "mode": "quick" if args.quick else "full",
        "settings": {
            "steps": steps, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
            "backbone": "mlp", "hidden_size": args.hidden_size, "num_categories": args.num_categories,
            "latent_dim": args.latent_dim, "num_latent_samples": args.num_latent_samples,
            "likelihood": args.likelihood, "binarized": binarize, "gumbel_temperature": args.gumbel_temperature,
            "score_function_baseline": baseline, "seed": args.seed, "threads": args.threads,
            "num_test_images": len(test_images),
        },
        "cluster_accuracy_method": "hungarian = best one-to-one assignment of categories to labels "
        "(scipy.optimize.linear_sum_assignment); majority = each category takes its most frequent label",
    }
    for estimator in args.estimators.split(","):
        config = VAEConfig(
            backbone="mlp", hidden_size=args.hidden_size, num_hidden_layers=2, latent_dim=args.latent_dim,
            num_categories=args.num_categories, categorical_estimator=estimator,
            num_latent_samples=args.num_latent_samples, score_function_baseline=baseline,
            gumbel_temperature=args.gumbel_temperature, likelihood=args.likelihood,
        )
        transformers.set_seed(args.seed)
        model = VAEModel(config)
        start = time.time()
        # the Trainer prints its logs: keep stdout for the JSON
        with tempfile.TemporaryDirectory() as output_dir, contextlib.redirect_stdout(sys.stderr):
            trainer = fit(
                model, data.train, output_dir=output_dir, collator=ImageCollator(binarize=binarize), max_steps=steps,
                per_device_train_batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed,
                logging_steps=max(steps // 10, 1), log_level="error", dataloader_num_workers=0,
            )
        train_seconds = time.time() - start
        logs = [entry for entry in trainer.state.log_history if "loss" in entry]
        results[estimator] = {
            **evaluate(model, test_images, test_labels, binarize),
            "final_train_loss": logs[-1]["loss"] if logs else None,
            "train_seconds": round(train_seconds, 1),
        }
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
