"""Data pipeline: the share of the Trainer's step time spent in `get_batch_samples` (the DataLoader: sampler,
`__getitem__`, `ImageCollator`) for MNIST held in memory as uint8, for the MLP VAE (the cheapest model, so the
largest share) and the conv VQ-VAE. Headline `data_wait_share`, the worst of them (target <= 0.05).

    python benchmarks/data_wait.py [--quick | --smoke]
"""

from __future__ import annotations

import tempfile

from _common import DataWaitTrainer, WindowTimer, build_model, section_main, trainer_args

from hf_autoencoders.data import ImageCollator

HEADLINES = {"data_wait_share": "data_wait_share"}


def data_wait_share(train, cfg, models, steps, batch_size=128) -> dict:
    rows = {}
    for family, backbone, size in models:
        timer = WindowTimer(cfg["warmup"], steps)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = DataWaitTrainer(model=build_model(family, backbone, size), data_collator=ImageCollator(),
                                      args=trainer_args(tmp, batch_size, cfg["warmup"] + steps), train_dataset=train,
                                      callbacks=[timer])
            trainer.train()
        wait = sum(trainer.waits[cfg["warmup"]:cfg["warmup"] + steps])
        rows[f"{family}-{backbone}-{size}"] = {"data_wait_share": wait / timer.seconds,
                                               "data_ms_per_step": 1e3 * wait / steps,
                                               "step_ms": 1e3 * timer.seconds / steps}
    worst = max(rows, key=lambda k: rows[k]["data_wait_share"])
    return {"batch_size": batch_size, "models": rows, "data_wait_share": rows[worst]["data_wait_share"],
            "worst_model": worst}


def run(bench) -> dict:
    models = [("vae", "mlp", "default"), ("vqvae", "conv", bench.cfg["size"])]
    return data_wait_share(bench.train, bench.cfg, models, bench.cfg["wait_steps"], min(128, len(bench.train)))


if __name__ == "__main__":
    section_main("data_pipeline", __doc__)
