"""Benchmarks of hf_autoencoders: framework overhead, speed and quality against pythae, compute utilisation, memory,
data-pipeline waits, quality per CPU budget, speed-ups and a GPU section. Prints ONE JSON object.

    python benchmarks/run.py --quick             # about a minute (on an idle 2-core CPU)
    python benchmarks/run.py                     # everything; about 1.5 hours on 2 CPU cores
    python benchmarks/run.py --smoke             # seconds; for the test suite
    python benchmarks/run.py --only overhead,mfu # some sections only

See benchmarks/README.md for what each figure means and the latest results.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import transformers  # noqa: E402
from _common import (  # noqa: E402
    MiB,
    WindowTimer,
    build_model,
    geomean,
    load_average,
    load_images,
    machine_info,
    matmul_flops_per_second,
    median,
    num_parameters,
    peak_tensor_bytes,
    rounded,
    subset,
    sync,
    training_step_flops,
    unit,
)

from hf_autoencoders.data import ImageCollator  # noqa: E402
from hf_autoencoders.training import AutoencoderTrainingArguments  # noqa: E402
from hf_autoencoders.training.trainer import AutoencoderTrainer, uses_channels_last  # noqa: E402

DEFAULT_DATA = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist")
OVERHEAD_MODELS = [(f, b) for b in ("conv", "vit") for f in ("ae", "vae", "vqvae")]

# Settings per mode: model size, batch size, measured steps, warm-up steps, repeats, ...
MODES = {
    "smoke": dict(size="tiny", batch=32, steps=3, warmup=1, repeats=1, models=[("vae", "conv"), ("vqvae", "vit")],
                  pythae_steps=3, pythae_size="tiny", pythae_iwae=(20, 32), budget_s=1.0, iwae_k=20, iwae_n=32,
                  eval_n=64, quality=("vae", "ae", "vqvae"), matmul_size=512, wait_steps=3),
    "quick": dict(size="quick", batch=64, steps=6, warmup=2, repeats=2, models=OVERHEAD_MODELS,
                  pythae_steps=10, pythae_size="small", pythae_iwae=(20, 200), budget_s=15.0, iwae_k=1000,
                  iwae_n=100, eval_n=1000, quality=("vae",), matmul_size=1024, wait_steps=15),
    "full": dict(size="default", batch=128, steps=20, warmup=3, repeats=5, models=OVERHEAD_MODELS,
                 pythae_steps=None, pythae_size="small", pythae_iwae=(100, 1000), budget_s=900.0, iwae_k=1000,
                 iwae_n=None, eval_n=None, quality=("vae", "vae_thresholded", "ae", "vqvae"), matmul_size=2048,
                 wait_steps=60),
}


def log(*args):
    print(f"[{time.strftime('%H:%M:%S')}]", *args, file=sys.stderr, flush=True)


def training_args(output_dir, batch_size, max_steps, device="cpu", **kwargs):
    """The arguments `hf_autoencoders.training.fit` uses (no checkpoints, no tqdm, no reporting), for `max_steps`."""
    defaults = dict(save_strategy="no", logging_steps=10, disable_tqdm=True, report_to="none", seed=0,
                    per_device_train_batch_size=batch_size, max_steps=max_steps, use_cpu=device == "cpu")
    return AutoencoderTrainingArguments(output_dir=str(output_dir), **{**defaults, **kwargs})


# ------------------------------------------------------------------------------------------- framework overhead


def trainer_samples_per_second(model, dataset, batch_size, steps, warmup, device="cpu", **kwargs) -> float:
    """Steady-state samples/s of `AutoencoderTrainer.train()` over steps warmup+1..warmup+steps (everything
    between two optimizer steps counts: data loading, collation, logging, callbacks, clipping)."""
    timer = WindowTimer(warmup, steps, device)
    with tempfile.TemporaryDirectory() as tmp:
        args = training_args(tmp, batch_size, warmup + steps, device, **kwargs)
        trainer = AutoencoderTrainer(model=model, args=args, data_collator=ImageCollator(), train_dataset=dataset,
                                     callbacks=[timer])
        trainer.train()
    return steps * batch_size / timer.seconds


def loop_samples_per_second(model, images, batch_size, steps, warmup, device="cpu", bf16=False,
                            max_grad_norm=1.0) -> float:
    """The same training written by hand: shuffled batches sliced from the in-memory uint8 tensor, the optimizer
    the Trainer builds (AdamW, weight decay 0 = Adam, lr 1e-3), the same gradient clipping."""
    args = training_args(tempfile.gettempdir(), batch_size, 1, device)
    optimizer_class, optimizer_kwargs = transformers.Trainer.get_optimizer_cls_and_kwargs(args, model)
    model.to(device).train()
    optimizer = optimizer_class(model.parameters(), **optimizer_kwargs)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    start = None
    for step in range(warmup + steps):
        index = order[(step * batch_size) % len(images):][:batch_size]
        pixel_values = unit(images[index]).to(device, non_blocking=True)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(pixel_values).loss
        loss.backward()
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step + 1 == warmup:
            sync(device)
            start = time.perf_counter()
    sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def framework_overhead(train, cfg, device="cpu", bf16=False, models=None, batch_size=None) -> dict:
    """Trainer vs hand-written loop, alternated in one process (A B, then B A, ...), per model: the median of the
    per-repeat ratios of samples/s, and the medians of each side."""
    batch_size = batch_size or cfg["batch"]
    results = {}
    for family, backbone in models or cfg["models"]:
        name = f"{family}-{backbone}"
        model = build_model(family, backbone, cfg["size"]).to(device)
        ours, loop, ratios, peaks = [], [], [], []
        for repeat in range(cfg["repeats"]):
            arms = ["trainer", "loop"] if repeat % 2 == 0 else ["loop", "trainer"]
            # the matmul peak is timed next to the runs so that MFU compares like with like on a loaded machine
            peaks.append(matmul_flops_per_second(device, cfg["matmul_size"], min_seconds=0.3,
                                                 dtype=torch.bfloat16 if bf16 else torch.float32))
            result = {}
            for arm in arms:
                if arm == "trainer":
                    result[arm] = trainer_samples_per_second(
                        model, train, batch_size, cfg["steps"], cfg["warmup"], device, bf16=bf16)
                else:
                    result[arm] = loop_samples_per_second(
                        model, train.images, batch_size, cfg["steps"], cfg["warmup"], device, bf16=bf16)
            ours.append(result["trainer"])
            loop.append(result["loop"])
            ratios.append(result["trainer"] / result["loop"])
        results[name] = {
            "trainer_samples_per_s": median(ours),
            "loop_samples_per_s": median(loop),
            "ratio": median(ratios),
            "ratios": ratios,
            "parameters": num_parameters(model),
            "matmul_gflop_per_s": median(peaks) / 1e9,
        }
        log(f"overhead {name}: ratio {median(ratios):.3f} ({median(ours):.0f} vs {median(loop):.0f} samples/s)")
        del model
    return results


def _per_call_us(fn, calls: int = 200) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return 1e6 * (time.perf_counter() - start) / calls


def overhead_breakdown(train, cfg) -> dict:
    """Microseconds per call of what the Trainer does each step beyond the hand-written loop (and of the model's
    input check, which both run), for the conv VAE at the benchmark's batch size."""
    from accelerate.utils import is_lomo_available

    batch_size = cfg["batch"]
    model = build_model("vae", "conv", cfg["size"])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = AutoencoderTrainer(model=model, args=training_args(tmp, batch_size, 1),
                                     data_collator=ImageCollator(), train_dataset=train)
        loader = trainer.get_train_dataloader()
    batches = iter(loader)

    def next_batch():
        nonlocal batches
        try:
            return next(batches)
        except StopIteration:
            batches = iter(loader)
            return next(batches)

    order = torch.randperm(len(train))
    x = next_batch()["pixel_values"]
    return {
        "batch_size": batch_size,
        "dataloader_batch_us (DataLoader + ImageCollator)": _per_call_us(next_batch, 50),
        "slice_batch_us (hand-written loop)": _per_call_us(lambda: unit(train.images[order[:batch_size]]), 50),
        "floating_point_ops_us (Trainer, every step)": _per_call_us(lambda: trainer.floating_point_ops({
            "pixel_values": x})),
        "is_lomo_available_us (accelerate optimizer.step, twice a step)": _per_call_us(is_lomo_available),
        "model_train_us (Trainer.training_step, every step)": _per_call_us(model.train),
        "check_pixel_values_us (model forward, both arms)": _per_call_us(lambda: model.check_pixel_values(x)),
    }


# ------------------------------------------------------------------------------------------------------- pythae


class _TimedTrainer(AutoencoderTrainer):
    """`AutoencoderTrainer` that also records how long each optimizer step waits for its batch."""

    data_wait = 0.0

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        start = time.perf_counter()
        batches = super().get_batch_samples(epoch_iterator, num_batches, device)
        self.data_wait += time.perf_counter() - start
        return batches


def pythae_comparison(train, test, cfg, threads) -> dict:
    """VAE (binarized MNIST, Bernoulli) and VQ-VAE (grey MNIST, squared error) trained by our Trainer and by
    pythae's BaseTrainer on the same networks (pythae wrappers around deep copies of our encoder and decoder, so
    even the initial weights agree), batch size, data order seed and optimizer (Adam, lr 1e-3, constant, no
    clipping: pythae's defaults). Samples/s and test quality after the same number of samples."""
    try:
        import pythae  # noqa: F401
        from pythae.data.datasets import BaseDataset
        from pythae.models import VAE as PythaeVAE
        from pythae.models import VQVAE as PythaeVQVAE
        from pythae.models import VAEConfig as PythaeVAEConfig
        from pythae.models import VQVAEConfig as PythaeVQVAEConfig
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
        from pythae.trainers import BaseTrainer, BaseTrainerConfig
        from pythae.trainers.training_callbacks import TrainingCallback
    except Exception as err:  # noqa: BLE001 - any import failure means "skipped"
        return {"skipped": f"pythae cannot be imported: {type(err).__name__}: {err}"}
    import importlib.metadata

    from hf_autoencoders.evaluation import likelihood_bounds, mse, psnr

    @torch.no_grad()
    def importance_sampled_nll(model, x, num_samples, batch_size=256, generator=None):
        """-IWAE_K per image (nats), `likelihood_bounds` chunk by chunk."""
        return torch.cat([-likelihood_bounds(model, chunk, num_samples, generator)[1] for chunk in x.split(batch_size)])

    class Encoder(BaseEncoder):
        def __init__(self, net, gaussian: bool):
            super().__init__()
            self.net, self.gaussian = net, gaussian

        def forward(self, x):
            out = self.net(x)
            if self.gaussian:
                mean, logvar = out.chunk(2, dim=-1)
                return ModelOutput(embedding=mean, log_covariance=logvar)
            return ModelOutput(embedding=out)

    class Decoder(BaseDecoder):
        def __init__(self, net, bernoulli: bool):
            super().__init__()
            self.net, self.bernoulli = net, bernoulli

        def forward(self, z):
            out = self.net(z)
            return ModelOutput(reconstruction=torch.sigmoid(out) if self.bernoulli else out)

    class PythaeVAEAdapter(torch.nn.Module):
        """Our metrics' view of a pythae VAE: encode -> DiagonalGaussian, log p(x|z) from the decoder's logits."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def encode(self, x):
            import hf_autoencoders as H

            out = self.model.encoder(x)
            return H.DiagonalGaussian(out.embedding, out.log_covariance)

        def log_likelihood(self, x, z):
            logits = self.model.decoder.net(z.reshape(-1, z.shape[-1]))
            targets = x.expand(*z.shape[:-1], *x.shape[1:]).reshape(logits.shape)
            nll = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
            return -nll.flatten(1).sum(1).view(z.shape[:-1])

        def log_importance_weights(self, x, num_samples, generator=None):
            """log p(x|z) + log N(z; 0, I) - log q(z|x), z ~ q(z|x), as `VAEModel.log_importance_weights`."""
            posterior = self.encode(x)
            z = posterior.sample(generator, num_samples)
            log_prior = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)
            return self.log_likelihood(x, z) + log_prior - posterior.log_prob(z)

    class StepTimer(TrainingCallback):
        def __init__(self, warmup, device):
            self.warmup, self.device, self.steps, self.start, self.last = warmup, device, 0, None, None

        def on_train_step_end(self, training_config, **kwargs):
            self.steps += 1
            if self.steps >= self.warmup:
                sync(self.device)
                self.last = time.perf_counter()
                if self.steps == self.warmup:
                    self.start = self.last

    device = "cpu"
    batch_size, warmup = cfg["batch"], cfg["warmup"]
    num_train = len(train) if cfg["pythae_steps"] is None else cfg["pythae_steps"] * batch_size
    train_part = subset(train, num_train)
    test_x = unit(subset(test, cfg["eval_n"]).images)
    results = {"pythae_version": importlib.metadata.version("pythae"), "train_samples": len(train_part),
               "epochs": 1, "batch_size": batch_size, "backbone": f"conv ({cfg['pythae_size']})"}
    for family in ("vae", "vqvae"):
        bernoulli = family == "vae"
        overrides = {"likelihood": "bernoulli"} if bernoulli else {}
        ours = build_model(family, "conv", cfg["pythae_size"], **overrides)
        encoder, decoder = Encoder(copy.deepcopy(ours.encoder), bernoulli), Decoder(copy.deepcopy(ours.decoder),
                                                                                   bernoulli)
        if bernoulli:
            theirs = PythaeVAE(PythaeVAEConfig(input_dim=(1, 28, 28), latent_dim=ours.config.latent_dim,
                                               reconstruction_loss="bce"), encoder=encoder, decoder=decoder)
        else:
            theirs = PythaeVQVAE(PythaeVQVAEConfig(input_dim=(1, 28, 28), latent_dim=ours.config.embedding_dim,
                                                   num_embeddings=ours.config.num_embeddings,
                                                   commitment_loss_factor=ours.config.commitment_cost),
                                 encoder=encoder, decoder=decoder)
        row = {}
        if bernoulli:  # the two models must agree before training: same networks, same estimator
            x = (test_x[:16] > 0.5).float()
            a = importance_sampled_nll(ours, x, 5, generator=torch.Generator().manual_seed(1))
            b = importance_sampled_nll(PythaeVAEAdapter(theirs), x, 5, generator=torch.Generator().manual_seed(1))
            row["initial_nll_max_abs_diff"] = (a - b).abs().max().item()

        # the compute ceiling: a hand-written loop on a copy of the same network in the fastest layout we know
        # (channels-last weights, our CPU default), no framework at all
        fastest = copy.deepcopy(ours).to(memory_format=torch.channels_last)
        row["loop_samples_per_s"] = loop_samples_per_second(fastest, train_part.images, batch_size, cfg["steps"],
                                                            warmup, max_grad_norm=0.0)
        row["channels_last"] = uses_channels_last(ours, training_args(tempfile.gettempdir(), batch_size, 1))

        # ours: AutoencoderTrainer, same optimizer as pythae's default (Adam = AdamW with weight decay 0)
        timer = WindowTimer(warmup, math.ceil(len(train_part) / batch_size) - warmup, device)
        with tempfile.TemporaryDirectory() as tmp:
            args = training_args(tmp, batch_size, -1, device, num_train_epochs=1, lr_scheduler_type="constant",
                                 max_grad_norm=0.0, logging_steps=50, dataloader_drop_last=False)
            trainer = AutoencoderTrainer(model=ours, args=args, data_collator=ImageCollator(binarize=bernoulli),
                                         train_dataset=train_part, callbacks=[timer])
            start = time.perf_counter()
            trainer.train()
            row["ours_end_to_end_s"] = time.perf_counter() - start
        if timer.end is None:  # the last step of the epoch closes the window
            timer.end = time.perf_counter()
        row["ours_samples_per_s"] = (len(train_part) - warmup * batch_size) / timer.seconds

        # pythae: BaseTrainer
        data = (unit(train_part.images) > 0.5).float() if bernoulli else unit(train_part.images)
        dataset = BaseDataset(data, torch.zeros(len(data)))
        step_timer = StepTimer(warmup, device)
        with tempfile.TemporaryDirectory() as tmp:
            config = BaseTrainerConfig(output_dir=tmp, per_device_train_batch_size=batch_size, num_epochs=1,
                                       learning_rate=1e-3, optimizer_cls="Adam", keep_best_on_train=True,
                                       no_cuda=True, seed=0)
            pythae_trainer = BaseTrainer(theirs, dataset, None, config, callbacks=[step_timer])
            start = time.perf_counter()
            pythae_trainer.train()
            row["pythae_end_to_end_s"] = time.perf_counter() - start
        row["pythae_samples_per_s"] = (len(train_part) - warmup * batch_size) / (step_timer.last - step_timer.start)
        row["ratio"] = row["ours_samples_per_s"] / row["pythae_samples_per_s"]
        row["end_to_end_ratio"] = row["pythae_end_to_end_s"] / row["ours_end_to_end_s"]
        # Any library running these networks eagerly is bounded by the loop: pythae's overhead is the most to win.
        row["ceiling_ratio"] = row["loop_samples_per_s"] / row["pythae_samples_per_s"]

        # test quality, the same estimator for both
        ours.eval()
        theirs.eval()
        with torch.no_grad():
            if bernoulli:
                x = (test_x > 0.5).float()
                k, n = cfg["pythae_iwae"][0], min(len(x), cfg["pythae_iwae"][1])
                generator = torch.Generator().manual_seed(0)
                row["iwae_k"], row["test_images"] = k, n
                row["ours_test_nll"] = importance_sampled_nll(ours, x[:n], k, batch_size=500,
                                                              generator=generator).mean().item()
                generator = torch.Generator().manual_seed(0)
                row["pythae_test_nll"] = importance_sampled_nll(PythaeVAEAdapter(theirs), x[:n], k, batch_size=500,
                                                                generator=generator).mean().item()
            else:
                mine = torch.cat([ours(b, return_loss=False).reconstruction for b in test_x.split(500)])
                other = torch.cat([theirs({"data": b}).recon_x for b in test_x.split(500)])
                row["test_images"] = len(test_x)
                row["ours_test_mse"], row["pythae_test_mse"] = mse(mine, test_x), mse(other, test_x)
                row["ours_test_psnr"] = psnr(mine.clamp(0, 1), test_x)
                row["pythae_test_psnr"] = psnr(other.clamp(0, 1), test_x)
        log(f"pythae {family}: ours {row['ours_samples_per_s']:.0f} vs pythae {row['pythae_samples_per_s']:.0f} "
            f"samples/s")
        results[family] = row
    results["ratio"] = geomean([results[f]["ratio"] for f in ("vae", "vqvae")])
    results["ceiling_ratio"] = geomean([results[f]["ceiling_ratio"] for f in ("vae", "vqvae")])
    return results


# --------------------------------------------------------------------------- compute utilisation, memory, data


def compute_utilisation(overhead: dict, cfg, device="cpu", batch_size=None) -> dict:
    """MFU = (FLOPs of one forward + backward, counted by FlopCounterMode) x (Trainer steps/s) / (the throughput of
    a large matmul, timed on the same device in the same run, next to each model's runs)."""
    batch_size = batch_size or cfg["batch"]
    rows = {}
    for name, row in overhead.items():
        family, backbone = name.split("-")
        model = build_model(family, backbone, cfg["size"]).to(device)
        x = torch.rand(batch_size, 1, 28, 28, device=device)
        flops = training_step_flops(model, x)
        achieved = flops * row["trainer_samples_per_s"] / batch_size
        rows[name] = {"gflop_per_step": flops / 1e9, "achieved_gflop_per_s": achieved / 1e9,
                      "matmul_gflop_per_s": row["matmul_gflop_per_s"],
                      "mfu": achieved / (row["matmul_gflop_per_s"] * 1e9)}
    return {"batch_size": batch_size, "models": rows, "mfu": geomean([r["mfu"] for r in rows.values()])}


def memory_per_sample(cfg, models, device="cpu", batch_size=None) -> dict:
    """Peak memory of a training step (forward, backward, optimizer step) at batch sizes B/2 and B; the per-sample
    figure is the slope (peak(B) - peak(B/2)) / (B/2), which leaves out what does not grow with the batch (weights,
    gradients, Adam state)."""
    batch_size = batch_size or cfg["batch"]
    rows = {}
    for family, backbone in models:
        model = build_model(family, backbone, cfg["size"]).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
        peaks = {}
        for b in (batch_size // 2, batch_size):
            peaks[b] = peak_tensor_bytes(model, optimizer, torch.rand(b, 1, 28, 28, device=device))
        per_sample = (peaks[batch_size] - peaks[batch_size // 2]) / (batch_size - batch_size // 2) / MiB
        rows[f"{family}-{backbone}"] = {"peak_mb": peaks[batch_size] / MiB, "mb_per_sample": per_sample}
        del model, optimizer
    worst = max(rows, key=lambda k: rows[k]["mb_per_sample"])
    return {"batch_size": batch_size, "method": "MemTracker (live tensor storages)" if device == "cpu"
            else "torch.cuda.max_memory_allocated", "models": rows, "peak_mem_mb_per_sample":
            rows[worst]["mb_per_sample"], "worst_model": worst}


def data_wait_share(train, cfg, models, steps, batch_size=128) -> dict:
    """Share of the Trainer's step time spent in `get_batch_samples` (the DataLoader: sampler, __getitem__,
    ImageCollator) for the in-memory uint8 MNIST."""
    rows = {}
    for family, backbone, size in models:
        model = build_model(family, backbone, size)
        waits = []

        class Timed(AutoencoderTrainer):
            def get_batch_samples(self, epoch_iterator, num_batches, device):
                start = time.perf_counter()
                batches = super().get_batch_samples(epoch_iterator, num_batches, device)
                waits.append(time.perf_counter() - start)
                return batches

        timer = WindowTimer(cfg["warmup"], steps)
        with tempfile.TemporaryDirectory() as tmp:
            args = training_args(tmp, batch_size, cfg["warmup"] + steps)
            Timed(model=model, args=args, data_collator=ImageCollator(), train_dataset=train,
                  callbacks=[timer]).train()
        wait = sum(waits[cfg["warmup"]:cfg["warmup"] + steps])
        rows[f"{family}-{backbone}-{size}"] = {"data_wait_share": wait / timer.seconds,
                                               "data_ms_per_step": 1e3 * wait / steps,
                                               "step_ms": 1e3 * timer.seconds / steps}
    worst = max(rows, key=lambda k: rows[k]["data_wait_share"])
    return {"batch_size": batch_size, "models": rows, "data_wait_share": rows[worst]["data_wait_share"],
            "worst_model": worst}


# --------------------------------------------------------------------------------------------------- speed-ups


def _alternate(fns: dict, repeats: int) -> dict:
    """Run each zero-argument function (returning samples/s) in turn, `repeats` times; the median of each."""
    results = {name: [] for name in fns}
    for repeat in range(repeats):
        names = list(fns) if repeat % 2 == 0 else list(fns)[::-1]
        for name in names:
            results[name].append(fns[name]())
    return {name: median(values) for name, values in results.items()}


def loader_samples_per_second(dataset, collator, batch_size, batches) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collator)
    iterator, start = iter(loader), time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


class BatchedImageDataset(torch.utils.data.Dataset):
    """An `ImageTensorDataset` with `__getitems__`: the DataLoader fetches a whole batch with one index operation
    (the change proposed for hf_autoencoders/data.py), yielding {"pixel_values": uint8 (B, C, H, W)}."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return {"pixel_values": self.images[index]}

    def __getitems__(self, indices):
        return {"pixel_values": self.images[torch.as_tensor(indices)]}


def batched_collator(batch):
    return {"pixel_values": unit(batch["pixel_values"])}


def speedups(train, cfg, data_path, quick: bool, compile_models: bool) -> dict:
    out = {}
    steps, warmup, batch_size = cfg["steps"], cfg["warmup"], cfg["batch"]
    repeats = 1 if quick else cfg["repeats"]
    images = train.images

    def loop(family, backbone, size, channels_last=False, threads=None, num_steps=None):
        model = build_model(family, backbone, size)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        old = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            if channels_last:
                return _loop_channels_last(model, images, batch_size, num_steps or steps, warmup)
            return loop_samples_per_second(model, images, batch_size, num_steps or steps, warmup)
        finally:
            torch.set_num_threads(old)

    # threads: 1 vs all cores
    cores = os.cpu_count() or 1
    if quick:
        out["threads_samples_per_s"] = {"skipped": "quick mode"}
    elif cores > 1:
        rows = {}
        for family, backbone in (("vae", "mlp"), ("vqvae", "conv")):
            rows[f"{family}-{backbone}"] = _alternate({  # small models, few steps: oversubscribed runs crawl
                "1": lambda: loop(family, backbone, "small", threads=1, num_steps=5),
                str(cores): lambda: loop(family, backbone, "small", threads=cores, num_steps=5),
            }, 2)
        out["threads_samples_per_s"] = rows
        log(f"speedups threads: {rows}")

    # channels_last on the conv backbone
    out["channels_last_samples_per_s"] = {
        f"{family}-conv": _alternate({
            "contiguous": lambda: loop(family, "conv", cfg["size"]),
            "channels_last": lambda: loop(family, "conv", cfg["size"], channels_last=True),
        }, repeats) for family in ("vae", "vqvae")}
    log(f"speedups channels_last: {out['channels_last_samples_per_s']}")

    # torch.compile (inductor; needs a C compiler on CPU)
    if compile_models:
        rows = {}
        for family, backbone in (("vae", "mlp"), ("vqvae", "conv")):
            try:
                start = time.perf_counter()
                model = torch.compile(build_model(family, backbone, cfg["size"]))
                loop_samples_per_second(model, images, batch_size, 1, 1)  # compiles forward and backward
                compile_s = time.perf_counter() - start
                result = _alternate({
                    "eager": lambda: loop(family, backbone, cfg["size"]),
                    "compiled": lambda: loop_samples_per_second(model, images, batch_size, steps, warmup),
                }, repeats)
                rows[f"{family}-{backbone}"] = {**result, "compile_seconds": compile_s}
            except Exception as err:  # noqa: BLE001
                rows[f"{family}-{backbone}"] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
        out["compile_samples_per_s"] = rows
        log(f"speedups compile: {rows}")
    else:
        out["compile_samples_per_s"] = {"skipped": "quick mode (compiling takes ~1-2 minutes per model here)"}

    # data path: pre-decoded uint8 in memory vs decoding PNGs per item; per-item vs batched fetch
    batches = 10 if quick else 100
    rows = _alternate({
        "uint8_in_memory": lambda: loader_samples_per_second(train, ImageCollator(), 128, batches),
        "uint8_in_memory_batched_getitems": lambda: loader_samples_per_second(
            BatchedImageDataset(images), batched_collator, 128, batches),
    }, repeats)
    if data_path and os.path.isdir(data_path):
        import datasets

        table = datasets.load_dataset(data_path, split="train")
        image_column = next(k for k, v in table.features.items() if isinstance(v, datasets.Image))

        def decode(example_batch):
            import numpy as np

            arrays = [np.asarray(im.convert("L"), dtype=np.uint8)[None] for im in example_batch[image_column]]
            return {"pixel_values": [torch.from_numpy(a) for a in arrays]}

        on_the_fly = table.with_transform(decode)
        rows["decode_png_per_item"] = loader_samples_per_second(on_the_fly, ImageCollator(), 128, max(batches // 4,
                                                                                                       5))
    out["data_loader_samples_per_s"] = rows
    log(f"speedups data: {rows}")

    # quantizer: nearest-code search
    out["quantizer_distance_ms"] = quantizer_distances(quick)
    return out


def _loop_channels_last(model, images, batch_size, steps, warmup) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    model.train()
    order = torch.randperm(len(images))
    start = None
    for step in range(warmup + steps):
        index = order[(step * batch_size) % len(images):][:batch_size]
        pixel_values = unit(images[index]).contiguous(memory_format=torch.channels_last)
        model(pixel_values).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step + 1 == warmup:
            start = time.perf_counter()
    return steps * batch_size / (time.perf_counter() - start)


def quantizer_distances(quick: bool, n=128 * 49, k=512, d=64) -> dict:
    """Milliseconds for the nearest-code search of N = 128 images x 7x7 positions against K = 512 codes of d = 64:
    ours (||z||^2 - 2 z.e + ||e||^2 in one addmm), torch.cdist, explicit broadcast differences, and pythae's
    version (three separate terms, then a one-hot matmul instead of an embedding lookup)."""
    from hf_autoencoders.models.quantizers import _squared_distances

    z, codes = torch.randn(n, d), torch.randn(k, d)

    def ours():
        indices = _squared_distances(z, codes).argmin(1)
        return torch.nn.functional.embedding(indices, codes)

    def cdist():
        return codes[torch.cdist(z, codes).argmin(1)]

    def broadcast():
        return codes[(z[:, None, :] - codes[None]).pow(2).sum(-1).argmin(1)]

    def pythae_style():
        distances = (z**2).sum(-1, keepdim=True) + (codes**2).sum(-1) - 2 * z @ codes.T
        one_hot = torch.nn.functional.one_hot(distances.argmin(-1), k).float()
        return one_hot @ codes

    repeats = 3 if quick else 20
    rows, reference = {}, ours()
    same = True
    for name, fn in (("ours_addmm", ours), ("cdist", cdist), ("broadcast", broadcast), ("pythae_style", pythae_style)):
        same &= torch.allclose(fn(), reference, atol=1e-5)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        rows[name] = 1e3 * median(times)
    return {"ms": rows, "same_codes": bool(same), "shape": f"N={n}, K={k}, d={d}"}


# ------------------------------------------------------------------------------------------------------------ GPU


def gpu_section(train, cfg) -> dict:
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    device = "cuda"
    out = {"device": torch.cuda.get_device_name(0)}
    models = [("vqvae", "conv"), ("vae", "conv"), ("vae", "vit")]
    gpu_cfg = {**cfg, "size": "default", "repeats": max(cfg["repeats"], 2), "steps": max(cfg["steps"], 20),
               "matmul_size": 8192}
    rows = {}
    for family, backbone in models:
        name = f"{family}-{backbone}"
        try:
            model = build_model(family, backbone, "default").to(device)
            rows[name] = {
                "fp32_b128_samples_per_s": trainer_samples_per_second(model, train, 128, gpu_cfg["steps"],
                                                                      gpu_cfg["warmup"], device),
                "bf16_b512_samples_per_s": trainer_samples_per_second(model, train, 512, gpu_cfg["steps"],
                                                                      gpu_cfg["warmup"], device, bf16=True),
            }
        except Exception as err:  # noqa: BLE001
            rows[name] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
    out["throughput"] = rows
    try:
        out["trainer_vs_loop_bf16_b512"] = framework_overhead(train, gpu_cfg, device, bf16=True, models=models,
                                                              batch_size=512)
    except Exception as err:  # noqa: BLE001
        out["trainer_vs_loop_bf16_b512"] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
    try:
        overhead = {name: row for name, row in out["trainer_vs_loop_bf16_b512"].items() if isinstance(row, dict)}
        out["mfu_bf16_b512"] = compute_utilisation(overhead, gpu_cfg, device, batch_size=512)
    except Exception as err:  # noqa: BLE001
        out["mfu_bf16_b512"] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
    try:
        out["memory_fp32"] = memory_per_sample(gpu_cfg, models, device, batch_size=512)
    except Exception as err:  # noqa: BLE001
        out["memory_fp32"] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
    return out


# ---------------------------------------------------------------------------------------------------- README table


def markdown_table(result: dict) -> str:
    """The headline figures of a result as the Markdown table of benchmarks/README.md."""
    machine = result["machine"]
    command = result.get("command", "python benchmarks/run.py")
    rows = [("trainer_vs_loop_ratio", ">= 0.95", "Trainer / hand-written loop, samples/s (geo. mean of 6 models)"),
            ("trainer_vs_loop_ratio_min", ">= 0.95", "worst model"),
            ("vs_pythae_ratio", ">= 1.5", "ours / pythae, samples/s (geo. mean of VAE, VQ-VAE)"),
            ("vs_pythae_ceiling_ratio", "-", "hand-written loop / pythae on the same networks: the most any "
             "eager library can reach"),
            ("mfu", "", "model FLOP/s / timed fp32 matmul FLOP/s (geo. mean)"),
            ("peak_mem_mb_per_sample", "", "MB per extra training sample (worst model)"),
            ("data_wait_share", "<= 0.05", "share of step time waiting for data (worst model)")]
    lines = ["| figure | value | target | what |", "|---|---|---|---|"]
    for key, target, what in rows:
        value = result.get(key)
        shown = "skipped: " + str(result.get("vs_pythae_skipped")) if value is None and key == "vs_pythae_ratio" \
            else value
        lines.append(f"| `{key}` | {shown} | {target} | {what} |")
    quality = result.get("quality") or {}
    for name, metric, unit_name in (("vae", "test_nll_nats", "nats (K=1000)"),
                                    ("vae_thresholded", "test_nll_nats", "nats (K=1000)"),
                                    ("ae", "test_psnr_db", "dB"), ("vqvae", "test_psnr_db", "dB")):
        if isinstance(quality.get(name), dict):
            row = quality[name]
            target = "<= 88" if name == "vae" else ""
            lines.append(f"| {name} test {metric.split('_')[1]} after {quality['budget_seconds']:.0f} s | "
                         f"{row[metric]} {unit_name} | {target} | {row['epochs']:.1f} epochs, {row['steps']} steps |")
    load = f"{machine.get('load_average_start')} -> {machine.get('load_average_end')}"
    lines.append("")
    lines.append(f"Command: `{command}`. Machine: {machine['cpu']}, {machine['cpu_count']} cores, "
                 f"{machine['torch_threads']} torch thread(s), torch {machine['torch']}, transformers "
                 f"{machine['transformers']}, CUDA: {machine['cuda']}; load average (1, 5, 15 min) at start -> end: "
                 f"{load}; {result.get('elapsed_s', 0) / 60:.0f} minutes.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="Small models, few steps, 15 s budgets (~1-2 minutes).")
    mode.add_argument("--smoke", action="store_true", help="Tiny models on the embedded digits (seconds).")
    parser.add_argument("--data", default=DEFAULT_DATA, help="MNIST in the Hub parquet layout.")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on the shared 2-core machine 2 threads ran 5-10x slower).")
    parser.add_argument("--only", default=None, help="Comma-separated sections: overhead,vs_pythae (pythae),"
                        "compute_utilisation (mfu),memory,data_pipeline (data_wait),quality,speedups,gpu.")
    parser.add_argument("--budget", type=float, default=None, help="Override the quality budget (seconds/model).")
    parser.add_argument("--compile", action="store_true", help="Measure torch.compile in --quick mode too.")
    parser.add_argument("--output", default=None, help="Also write the JSON here.")
    parser.add_argument("--table", default=None, help="Print the README table of a saved JSON result and exit.")
    args = parser.parse_args(argv)
    if args.table:
        return markdown_table(json.loads(Path(args.table).read_text()))
    name = "smoke" if args.smoke else "quick" if args.quick else "full"
    cfg = dict(MODES[name])
    if args.budget is not None:
        cfg["budget_s"] = args.budget
    aliases = {"mfu": "compute_utilisation", "pythae": "vs_pythae", "data_wait": "data_pipeline"}
    sections = {aliases.get(k, k) for k in args.only.split(",")} if args.only else None

    def wanted(section):
        return sections is None or section in sections

    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()
    started = time.perf_counter()
    result = {"mode": name, "command": "python benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": machine_info()}
    train, test, data_desc = load_images(args.data, smoke=args.smoke)
    result["data"] = data_desc

    def section(key, fn):
        if not wanted(key):
            return None
        log(f"section {key} ...")
        start = time.perf_counter()
        try:
            value = fn()
        except Exception as err:  # noqa: BLE001 - one failing section must not hide the others
            traceback.print_exc(file=sys.stderr)
            value = {"error": f"{type(err).__name__}: {err}"}
        if isinstance(value, dict):
            value["seconds"] = time.perf_counter() - start
        result[key] = value
        return value

    overhead = section("overhead", lambda: framework_overhead(train, cfg))
    if overhead and "error" not in overhead:
        ratios = {k: v["ratio"] for k, v in overhead.items() if isinstance(v, dict)}
        result["trainer_vs_loop_ratio"] = geomean(ratios.values())
        result["trainer_vs_loop_ratio_min"] = min(ratios.values())
    section("overhead_breakdown", lambda: overhead_breakdown(train, cfg))
    pythae = section("vs_pythae", lambda: pythae_comparison(train, test, cfg, args.threads))
    if pythae is not None:
        result["vs_pythae_ratio"] = pythae.get("ratio")
        result["vs_pythae_ceiling_ratio"] = pythae.get("ceiling_ratio")
        if "skipped" in pythae or "error" in pythae:
            result["vs_pythae_skipped"] = pythae.get("skipped") or pythae.get("error")
    if wanted("compute_utilisation"):
        if not overhead or "error" in overhead:
            overhead = framework_overhead(train, {**cfg, "repeats": 1})
        stats = section("compute_utilisation", lambda: compute_utilisation(
            {k: v for k, v in overhead.items() if isinstance(v, dict)}, cfg))
        result["mfu"] = stats.get("mfu")
    memory_models = cfg["models"] if name == "full" else [("vae", "conv"), ("vqvae", "vit")]
    memory_models = memory_models + ([] if args.smoke else [("vae", "mlp")])
    memory = section("memory", lambda: memory_per_sample(cfg, memory_models))
    if memory is not None:
        result["peak_mem_mb_per_sample"] = memory.get("peak_mem_mb_per_sample")
    wait_models = [("vae", "mlp", "default"), ("vqvae", "conv", cfg["size"])]
    wait = section("data_pipeline", lambda: data_wait_share(train, cfg, wait_models, cfg["wait_steps"],
                                                            batch_size=min(128, len(train))))
    if wait is not None:
        result["data_wait_share"] = wait.get("data_wait_share")
    if wanted("quality"):
        from quality_budget import quality_per_budget

        size = "tiny" if args.smoke else None
        section("quality", lambda: quality_per_budget(train, test, cfg["budget_s"], cfg["iwae_k"], cfg["iwae_n"],
                                                      cfg["eval_n"], names=cfg["quality"], size=size, log=log))
    if not args.smoke:
        section("speedups", lambda: speedups(train, cfg, None if args.smoke else args.data, name != "full",
                                             compile_models=name == "full" or args.compile))
    section("gpu", lambda: gpu_section(train, cfg))
    result["machine"]["load_average_end"] = load_average()
    result["elapsed_s"] = time.perf_counter() - started
    result = rounded(result)
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    real_stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs; stdout carries only the JSON
        output = main()
    print(output if isinstance(output, str) else json.dumps(output, indent=1), file=real_stdout)
