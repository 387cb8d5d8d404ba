"""Benchmark of issue 4 on MNIST: a VQ-VAE that keeps its whole codebook alive, and a PixelCNN prior that makes it
generate.

    python benchmarks/vq_prior.py --data ../shared/data/mnist --quick            # ~1-2 minutes
    python benchmarks/vq_prior.py --data ../shared/data/mnist --output vq_prior.json   # ~20 minutes on 2 CPU cores

Prints one JSON object (progress goes to stderr):
- `vqvae.plain` / `vqvae.ema_kmeans_restart`: two conv VQ-VAEs with K = 512 codes, trained alike with
  `hf_autoencoders.training.fit`, one with the paper's plain codebook (learned by the codebook loss from a random
  init), one with EMA updates, k-means initialisation and dead-code restarts. For each: codebook usage (fraction
  of the K codes used at least once) and perplexity over the whole test set, and the test reconstruction PSNR
  (dB, mean over images).
- `prior`: a gated PixelCNN prior trained on the training-set codes of the second VQ-VAE (codes extracted once);
  its test NLL per code (nats and bits), beside log K (uniform codes) and the cross entropy of the training-set
  code histogram (positions modelled independently).
- `sample_quality`: a SmallCNN digit classifier trained on real MNIST judges prior samples and uniformly random
  codes, decoded by the same VQ-VAE (and, for reference, real test images): `confident_fraction` is the fraction
  with max_y p(y | x) >= 0.9 (see `hf_autoencoders.evaluation.sample_quality`).
If the data folder is absent it prints {"skipped": reason}.
"""

import argparse
import contextlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

from hf_autoencoders.results import dumps, write_json

BUDGETS = {
    # full: ~20 minutes on 2 contended CPU cores (conv VQ-VAE step ~0.3 s, prior step ~0.9 s at batch 128).
    "full": dict(train_images=None, test_images=None, vq_steps=800, vq_hidden=32, dead_code_threshold=20,
                 prior_steps=400, prior_hidden=32, prior_layers=6, classifier_images=None, classifier_epochs=2,
                 num_samples=1000),
    "quick": dict(train_images=5000, test_images=1000, vq_steps=150, vq_hidden=16, dead_code_threshold=10,
                  prior_steps=100, prior_hidden=16, prior_layers=3, classifier_images=5000, classifier_epochs=1,
                  num_samples=200),
}
NUM_EMBEDDINGS, EMBEDDING_DIM, BATCH_SIZE = 512, 64, 128  # K and d as the config defaults


def log(message: str) -> None:
    print(f"[vq_prior {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def evaluate_vqvae(model, test_set) -> tuple[dict, torch.Tensor]:
    """Codebook usage/perplexity over the whole test set, reconstruction PSNR (`evaluate`), and the test code maps."""
    from hf_autoencoders.evaluation import evaluate

    codes = []
    metrics = evaluate(model, test_set, batch_size=500, progress=False,
                       on_batch=lambda x, output: codes.append(output.indices.cpu()))
    return {
        "codebook_usage": metrics["codebook_usage"],
        "codes_used": round(metrics["codebook_usage"] * model.config.num_embeddings),
        "codebook_perplexity": metrics["codebook_perplexity"],
        "test_psnr_db": metrics["psnr"],
    }, torch.cat(codes)


def unigram_cross_entropy(train_codes: torch.Tensor, test_codes: torch.Tensor, num_embeddings: int) -> float:
    """-(1/N) sum log q(c) over test codes, q the add-one-smoothed histogram of the training codes (nats/code)."""
    counts = torch.bincount(train_codes.flatten().long(), minlength=num_embeddings).double() + 1
    log_q = (counts / counts.sum()).log()
    return -log_q[test_codes.flatten().long()].mean().item()


def run(data_path: str, budget: dict, seed: int = 0) -> dict:
    from hf_autoencoders import PixelCNNPriorConfig, PixelCNNPriorModel, VQVAEConfig, VQVAEModel
    from hf_autoencoders.data import ImageTensorDataset, load_image_dataset
    from hf_autoencoders.evaluation import classifier_accuracy, sample_quality, train_classifier
    from hf_autoencoders.evaluation.priors import code_nll
    from hf_autoencoders.training import fit
    from hf_autoencoders.training.prior import CodeDataset, extract_codes, fit_prior

    timings, start = {}, time.time()
    data = load_image_dataset(data_path)
    train, test = data.train, data.test
    if budget["train_images"]:
        train = ImageTensorDataset(train.images[:budget["train_images"]], train.labels[:budget["train_images"]])
    if budget["test_images"]:
        test = ImageTensorDataset(test.images[:budget["test_images"]], test.labels[:budget["test_images"]])
    real_test = test.images.float() / 255
    log(f"data: {len(train)} train / {len(test)} test images")

    n = budget["classifier_images"] or len(data.train)
    classifier = train_classifier(data.train.images[:n].float() / 255, data.train.labels[:n], 10,
                                  epochs=budget["classifier_epochs"], width=16, seed=seed, progress=False)
    classifier_accuracy_ = classifier_accuracy(classifier, real_test, test.labels)
    timings["classifier"] = time.time() - start
    log(f"classifier: test accuracy {classifier_accuracy_:.4f}")

    variants = {  # every option spelled out: the config's defaults are not the paper's plain codebook
        "plain": dict(codebook_ema=False, kmeans_init=False, dead_code_threshold=0),
        "ema_kmeans_restart": dict(codebook_ema=True, kmeans_init=True,
                                   dead_code_threshold=budget["dead_code_threshold"]),
    }
    vqvae_results, models, test_codes = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in variants.items():
            t = time.time()
            torch.manual_seed(seed)
            config = VQVAEConfig(num_embeddings=NUM_EMBEDDINGS, embedding_dim=EMBEDDING_DIM,
                                 hidden_size=budget["vq_hidden"], **options)
            trainer = fit(VQVAEModel(config), train, output_dir=f"{tmp}/{name}", max_steps=budget["vq_steps"],
                          per_device_train_batch_size=BATCH_SIZE, seed=seed, logging_steps=100)
            models[name] = trainer.model.eval()
            vqvae_results[name], test_codes[name] = evaluate_vqvae(models[name], test)
            vqvae_results[name]["options"] = options
            vqvae_results[name]["train_loss"] = trainer.state.log_history[-1].get("train_loss")
            timings[f"vqvae_{name}"] = time.time() - t
            log(f"vqvae {name}: {json.dumps({k: v for k, v in vqvae_results[name].items() if k != 'options'})}")

        t = time.time()
        vqvae = models["ema_kmeans_restart"]
        train_codes, _ = extract_codes(vqvae, train, batch_size=500, progress=False)
        torch.manual_seed(seed)
        prior = PixelCNNPriorModel(PixelCNNPriorConfig(
            num_embeddings=NUM_EMBEDDINGS, grid_size=vqvae.config.latent_grid_size, hidden_size=budget["prior_hidden"],
            num_layers=budget["prior_layers"], kernel_size=3, vqvae_identity=vqvae.identity()))
        fit_prior(prior, CodeDataset(train_codes), output_dir=f"{tmp}/prior", max_steps=budget["prior_steps"],
                  per_device_train_batch_size=BATCH_SIZE, seed=seed, logging_steps=50)
        prior.eval()
        nll = code_nll(prior, CodeDataset(test_codes["ema_kmeans_restart"]), batch_size=500)
        timings["prior"] = time.time() - t
        log(f"prior: test NLL {nll:.4f} nats/code")

    t = time.time()
    num_samples = budget["num_samples"]
    with torch.no_grad():
        generator = torch.Generator().manual_seed(seed)
        prior_samples = vqvae.sample(num_samples, generator=generator, prior=prior).clamp(0, 1)
        uniform_samples = vqvae.sample(num_samples, generator=generator).clamp(0, 1)
    quality = {
        "num_samples": num_samples,
        "confidence_threshold": 0.9,
        "classifier_test_accuracy": classifier_accuracy_,
        "prior": sample_quality(classifier, prior_samples),
        "uniform": sample_quality(classifier, uniform_samples),
        "real_test_images": sample_quality(classifier, real_test[:num_samples]),
    }
    timings["sampling"] = time.time() - t
    timings["total"] = time.time() - start
    return {
        "dataset": data_path,
        "train_images": len(train),
        "test_images": len(test),
        "num_embeddings": NUM_EMBEDDINGS,
        "embedding_dim": EMBEDDING_DIM,
        "latent_grid": vqvae.config.latent_grid_size,
        "budget": budget,
        "vqvae": vqvae_results,
        "target_usage_met": vqvae_results["ema_kmeans_restart"]["codebook_usage"] >= 0.9,
        "prior": {
            "test_nll_per_code_nats": nll,
            "test_bits_per_code": nll / math.log(2),
            "uniform_nll_per_code_nats": math.log(NUM_EMBEDDINGS),
            "unigram_nll_per_code_nats": unigram_cross_entropy(train_codes, test_codes["ema_kmeans_restart"],
                                                               NUM_EMBEDDINGS),
            "hidden_size": budget["prior_hidden"],
            "num_layers": budget["prior_layers"],
            "kernel_size": 3,
            "train_steps": budget["prior_steps"],
        },
        "sample_quality": quality,
        "summary": {
            "codebook_usage_plain": vqvae_results["plain"]["codebook_usage"],
            "codebook_usage_ema_kmeans_restart": vqvae_results["ema_kmeans_restart"]["codebook_usage"],
            "psnr_plain_db": vqvae_results["plain"]["test_psnr_db"],
            "psnr_ema_kmeans_restart_db": vqvae_results["ema_kmeans_restart"]["test_psnr_db"],
            "prior_nll_per_code_nats": nll,
            "confident_fraction_prior_samples": quality["prior"]["confident_fraction"],
            "confident_fraction_uniform_samples": quality["uniform"]["confident_fraction"],
        },
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "torch_threads": torch.get_num_threads(),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/mnist", help="MNIST in the Hub's parquet layout.")
    parser.add_argument("--quick", action="store_true", help="Tiny budgets (~1-2 minutes).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 is fastest on a shared 2-core machine: more threads thrash).")
    parser.add_argument("--output", default=None, help="Also write the JSON to this file.")
    args = parser.parse_args(argv)
    if not Path(args.data).is_dir():
        result = {"skipped": f"{args.data} is not a folder (MNIST in the Hub parquet layout is needed)"}
    else:
        torch.set_num_threads(args.threads)
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs; stdout carries only the JSON
            result = run(args.data, BUDGETS["quick" if args.quick else "full"], args.seed)
        result["mode"] = "quick" if args.quick else "full"
    if args.output:
        write_json(args.output, result)
    print(dumps(result))
    return result


if __name__ == "__main__":
    main()
