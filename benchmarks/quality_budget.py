"""Quality per budget: how good a model `AutoencoderTrainer` reaches on MNIST in a fixed wall-clock budget.

- VAE on binarized MNIST, Bernoulli decoder: test -log p(x) from the importance-weighted bound with K = 1000 samples
  (Burda et al., 2016). `vae`: dynamically binarized (every batch draws pixels ~ Bernoulli(intensity), as in the
  IWAE paper; test images binarized once with a fixed seed), the setting the 86.76-nat figure refers to.
  `vae_thresholded`: pixels thresholded at 0.5, an easier dataset whose NLL is not comparable.
- AE and VQ-VAE on grey-level MNIST: test PSNR.

Training stops when the budget is spent (`TimeBudget`), and the learning rate follows a cosine over the elapsed
share of the budget, so the schedule ends when the time does. Evaluation is not counted in the budget.

    python benchmarks/quality_budget.py --budget 900        # this part alone; prints JSON
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import TimeBudget, binarized, build_model, log, rounded, subset, time_cosine_scheduler, unit

from hf_autoencoders.data import ImageCollator
from hf_autoencoders.evaluation import likelihood_bounds, mse, psnr
from hf_autoencoders.training import AutoencoderTrainer, training_arguments

# The models, chosen for quality per CPU-minute (MLP backbones are ~4x faster per sample than conv on CPU).
MODELS = {
    "vae": dict(family="vae", backbone="mlp", size="default", batch=128, lr=1e-3, binarize="stochastic",
                overrides=dict(likelihood="bernoulli", latent_dim=32, hidden_size=512)),
    "vae_thresholded": dict(family="vae", backbone="mlp", size="default", batch=128, lr=1e-3, binarize="threshold",
                            overrides=dict(likelihood="bernoulli", latent_dim=32, hidden_size=512)),
    "ae": dict(family="ae", backbone="mlp", size="default", batch=128, lr=1e-3, binarize=None,
               overrides=dict(latent_dim=32, hidden_size=512)),
    "vqvae": dict(family="vqvae", backbone="conv", size="default", batch=128, lr=1e-3, binarize=None,
                  overrides=dict(hidden_size=32, num_embeddings=256, embedding_dim=32)),
}


def train_for(model, train, seconds: float, batch_size: int, lr: float, binarize: str | None, max_grad_norm=1.0):
    """Train with `AutoencoderTrainer` until `seconds` of wall-clock time have passed; returns the trainer and
    (steps, samples, seconds) actually done."""
    budget = TimeBudget(seconds)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)  # Adam
    scheduler = time_cosine_scheduler(optimizer, budget)
    with tempfile.TemporaryDirectory() as tmp:
        args = training_arguments(tmp, per_device_train_batch_size=batch_size, num_train_epochs=100_000,
                                  logging_steps=500, seed=0, use_cpu=True, max_grad_norm=max_grad_norm)
        trainer = AutoencoderTrainer(model=model, args=args, data_collator=ImageCollator(
            binarize=binarize is not None, stochastic_binarization=binarize == "stochastic"),
                                     train_dataset=train, callbacks=[budget], optimizers=(optimizer, scheduler))
        trainer.train()
    steps = trainer.state.global_step
    return trainer, {"steps": steps, "samples": steps * batch_size, "epochs": steps * batch_size / len(train),
                     "train_seconds": budget.elapsed}


def evaluate(binarize: str | None, model, test_images: torch.Tensor, iwae_k: int, iwae_n: int | None) -> dict:
    """Test metrics: IWAE NLL (K = iwae_k) and ELBO for the (binarized) VAEs, PSNR and MSE for the others."""
    start = time.perf_counter()
    model.eval()
    if binarize is not None:
        images = test_images if iwae_n is None else test_images[:iwae_n]
        generator = torch.Generator().manual_seed(0)
        x = torch.bernoulli(unit(images), generator=generator) if binarize == "stochastic" else binarized(images)
        with torch.no_grad():
            bounds = [likelihood_bounds(model, chunk, iwae_k, generator) for chunk in x.split(1000)]
        nll = -torch.cat([iwae for _, iwae in bounds])
        neg_elbo = -torch.cat([elbo for elbo, _ in bounds])
        out = {"test_nll_nats": nll.mean().item(), "test_nll_stderr": (nll.std() / len(nll) ** 0.5).item(),
               "test_neg_elbo_nats": neg_elbo.mean().item(), "iwae_k": iwae_k, "test_images": len(x)}
    else:
        x = unit(test_images)
        with torch.no_grad():
            reconstruction = torch.cat([model(b, return_loss=False).reconstruction for b in x.split(1000)])
        out = {"test_psnr_db": psnr(reconstruction.clamp(0, 1), x), "test_mse": mse(reconstruction, x),
               "test_images": len(x)}
    out["eval_seconds"] = time.perf_counter() - start
    return out


def quality_per_budget(train, test, seconds: float, iwae_k: int = 1000, iwae_n: int | None = None,
                       eval_n: int | None = None, names=("vae", "vae_thresholded", "ae", "vqvae"), size=None,
                       log=print) -> dict:
    """Train each model for `seconds` and evaluate it on the test split (or its first eval_n / iwae_n images)."""
    results = {"budget_seconds": seconds, "threads": torch.get_num_threads()}
    test_images = subset(test, eval_n).images
    for name in names:
        spec = MODELS[name]
        model = build_model(spec["family"], spec["backbone"], size or spec["size"], **spec["overrides"])
        trainer, done = train_for(model, train, seconds, spec["batch"], spec["lr"], spec["binarize"])
        row = {"model": f"{spec['family']} {spec['backbone']} {spec['overrides']}", "batch_size": spec["batch"],
               "learning_rate": spec["lr"], "binarization": spec["binarize"],
               "parameters": sum(p.numel() for p in model.parameters()), **done}
        row.update(evaluate(spec["binarize"], model, test_images, iwae_k, iwae_n))
        log(f"quality {name}: {row}")
        results[name] = row
    return results


def run(bench) -> dict:
    """The quality section of `run.py`: the mode's models, budget and evaluation sizes."""
    cfg = bench.cfg
    return quality_per_budget(bench.train, bench.test, cfg["budget_s"], cfg["iwae_k"], cfg["iwae_n"], cfg["eval_n"],
                              names=cfg["quality"], size="tiny" if bench.mode == "smoke" else None, log=log)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"))
    parser.add_argument("--budget", type=float, default=900.0, help="Training seconds per model.")
    parser.add_argument("--iwae_k", type=int, default=1000)
    parser.add_argument("--iwae_n", type=int, default=None, help="Test images for the NLL (default: all).")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from _common import load_images

    train, test, _ = load_images(args.data)
    with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs; stdout carries only the JSON
        results = quality_per_budget(train, test, args.budget, args.iwae_k, args.iwae_n,
                                     names=args.models.split(","), log=log)
    print(json.dumps(rounded(results)))


if __name__ == "__main__":
    main()
