"""Benchmark of issue 24: the autoencoder of latent diffusion (a KL-VAE with the ldm backbone and a latent map).

    OMP_NUM_THREADS=1 python benchmarks/latent_autoencoder.py --seeds 0,1,2 --budget 900 \
        > benchmarks/results/latent_autoencoder.json
    python benchmarks/latent_autoencoder.py --smoke      # seconds: the embedded digits, tiny models and budgets
    python benchmarks/latent_autoencoder.py --device cuda --sections speed --bf16 --speed_image_size 256 \
        --speed_block_out_channels 128 256 512 512 --speed_batch_size 16    # what benchmarks/gpu.sh runs

Sections (`--sections`, every one by default); the headline keys are at the top of the JSON:

- `quality` (`psnr_gain_over_vqvae_db`): on CIFAR-10, a KL-VAE with the ldm backbone at f = 4 and c = 4 (8x8x4
  latents; `--block_out_channels`, `--layers_per_block`, `--gaussian_variance`) against the conv VQ-VAE with
  K = 512 codes of d = 64 on the same 8x8 grid (the library's defaults), at equal training wall-clock. The step time
  t_m of each model is calibrated first (`--calibration_rounds` rounds in which the models take turns, the order
  reversed every other round, `--calibration_steps` timed steps each; the median: `evaluation.timing`), and each
  model then trains,
  for every seed, n_m = round(budget / t_m) steps through the library (`AutoencoderTrainer`, Adam at
  `--learning_rate`, batch `--batch_size`, cosine schedule with `--warmup_steps` of warm-up, gradients clipped at
  1). Test PSNR and SSIM (`evaluation.evaluate`, on images mapped back to [0, 1]) and the reconstruction Fréchet
  distance in the features of a small classifier of the first 10,000 labelled training images (as a training
  run's card measures it: `evaluation.quality_metrics`), mean and sample std over seeds.
  Target: the VAE's mean test PSNR at least 1.0 dB above the VQ-VAE's. Beside them (`--conv_vae`, on by default),
  the same 8x8x4 KL-VAE on the conv backbone (`vae_conv`: the VQ-VAE's encoder and decoder with a latent map,
  pixels in [-1, 1], the same c), which shows what the ldm layout's per-step cost takes at equal time.
- `scaling` (`scaled_latent_std`, `scaled_latent_mean`): `evaluation.scaling_factors` of the first seed's VAE, measured
  on posterior samples of the whole training split and applied to the test split's. Target: std 1 +- 0.05,
  |mean| <= 0.05.
- `tiling` (`tiled_psnr_drop_db`, `tiled_peak_memory_ratio`): the same VAE (trained on 32x32 images) encodes
  `--tiling_images` 128x128 mosaics of 4x4 test images and decodes their latents untiled and with `enable_tiling()`
  (tiles of the training size, a quarter overlapping); the PSNR drop of the tiled decoding against the untiled one,
  and the ratio of the two decodings' peak memory (every live tensor, parameters included: on CUDA
  `max_memory_allocated`, on CPU the bytes of the live tensors followed by a `TorchDispatchMode`). Target: a drop of at most 0.3 dB at most 60% of the memory.
- `export` (`export_max_abs_diff`): the VAE exported with `diffusers_compat.export_to_diffusers` and loaded with
  `diffusers.AutoencoderKL.from_pretrained`; the largest difference of the two decodings of the same test latents,
  and of the two posterior means. Target: <= 1e-5.
- `speed` (`vs_diffusers_ratio`, `trainer_mfu`): training samples/s of our VAE through `AutoencoderTrainer` against
  diffusers' `AutoencoderKL` of the identical configuration and weights trained by a plain PyTorch loop (the same
  loss, MSE / 2c + KL, the same optimizer, clipping and batch), side by side in one process: `--speed_repeats`
  repeats, the two arms alternating (the order reversed every other repeat), each `--speed_warmup` untimed then
  `--speed_steps` timed steps on random uint8 images of `--speed_image_size`; the ratio is the median of the
  per-repeat ratios. `--bf16` runs both under bfloat16 autocast. The Trainer's MFU is its FLOP/s (the FLOPs of one
  step counted by `FlopCounterMode`, times steps per second) over a timed square matmul's. Target: ratio >= 1.1.

Prints one JSON object (stdout; progress and the Trainer's logs go to stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import (
    WindowTimer,
    load_average,
    log,
    machine_info,
    matmul_flops_per_second,
    num_parameters,
    rounded,
    sync,
    training_step_flops,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SECTIONS = ("quality", "scaling", "tiling", "export", "speed")
TARGETS = {"psnr_gain_over_vqvae_db": ">= 1.0", "vs_diffusers_ratio": ">= 1.1", "export_max_abs_diff": "<= 1e-5",
           "scaled_latent_std": "1 +- 0.05", "scaled_latent_mean": "|x| <= 0.05", "tiled_psnr_drop_db": "<= 0.3",
           "tiled_peak_memory_ratio": "<= 0.6"}


def mean_std(values) -> dict:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return {"mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None, "values": values}


# -------------------------------------------------------------------------------------------------------- models


def vae_config(args, image_size: int, num_channels: int, block_out_channels=None):
    from hf_autoencoders.models import VAEConfig

    channels = tuple(block_out_channels or args.block_out_channels)
    return VAEConfig(backbone="ldm", image_size=image_size, num_channels=num_channels, latent_channels=4,
                     block_out_channels=channels, layers_per_block=args.layers_per_block,
                     norm_num_groups=math.gcd(*channels, args.norm_num_groups),
                     gaussian_variance=args.gaussian_variance)


def conv_vae_config(args, image_size: int, num_channels: int):
    """The same 8x8x4 KL-VAE on the conv backbone (the VQ-VAE's, with a latent map): what the ldm layout costs."""
    from hf_autoencoders.models import VAEConfig

    return VAEConfig(backbone="conv", image_size=image_size, num_channels=num_channels, latent_channels=4,
                     hidden_size=args.vq_hidden_size, pixel_range=(-1.0, 1.0),
                     gaussian_variance=args.gaussian_variance)


def vqvae_config(args, image_size: int, num_channels: int):
    from hf_autoencoders.models import VQVAEConfig

    return VQVAEConfig(backbone="conv", image_size=image_size, num_channels=num_channels, hidden_size=args.vq_hidden_size,
                       num_embeddings=args.num_embeddings, embedding_dim=64)


def build(config, seed: int, device):
    from hf_autoencoders.models import VAEModel, VQVAEModel

    torch.manual_seed(seed)
    model_class = VAEModel if config.model_type == "hf_autoencoders_vae" else VQVAEModel
    return model_class(config).to(device)


def collator_for(model):
    from hf_autoencoders.data import ImageCollator

    return ImageCollator(pixel_range=model.config.pixel_range)


def trainer_for(model, dataset, output_dir, args, seed: int, max_steps: int, **fields):
    from hf_autoencoders.training.arguments import training_arguments
    from hf_autoencoders.training.trainer import AutoencoderTrainer

    callbacks = fields.pop("callbacks", None)
    fields = dict(dict(max_steps=max_steps, per_device_train_batch_size=args.batch_size, seed=seed,
                       learning_rate=args.learning_rate, warmup_steps=min(args.warmup_steps, max_steps // 10),
                       use_cpu=args.device == "cpu"), **fields)
    return AutoencoderTrainer(model=model, args=training_arguments(output_dir, **fields), train_dataset=dataset,
                              data_collator=collator_for(model), callbacks=callbacks)


# ------------------------------------------------------------------------------------------------------ quality


def manual_step_seconds(model, images, batch_size: int, steps: int, device) -> list[float]:
    """Wall-clock seconds of `steps` training steps (forward, backward, clipping, Adam) of `model` on random batches
    of the uint8 `images`, as the Trainer takes them: the calibration of equal-time training."""
    from hf_autoencoders.evaluation.metrics import to_model_range

    optimizer = getattr(model, "_calibration_optimizer", None) or torch.optim.Adam(model.parameters(), lr=1e-4)
    model._calibration_optimizer = optimizer
    model.train()
    times = []
    for _ in range(steps):
        index = torch.randint(len(images), (batch_size,))
        start = time.perf_counter()
        pixel_values = to_model_range(model, images[index].to(device).float() / 255)
        model(pixel_values).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def calibrate(configs: dict, images, args) -> dict:
    """Each model's median step time, the models taking turns (`evaluation.timing.alternate`), in the memory layout
    the Trainer gives it (channels-last for conv models on a CPU), and the steps that fit in the budget
    (`equal_time_steps`)."""
    from hf_autoencoders.evaluation.timing import alternate, equal_time_steps

    models = {name: build(config, 0, args.device) for name, config in configs.items()}
    for model in models.values():
        if _channels_last(model, args):  # timed in the memory layout the Trainer trains it in
            model.to(memory_format=torch.channels_last)
        manual_step_seconds(model, images, args.batch_size, args.calibration_warmup, args.device)
    measures = {name: (lambda m=model: manual_step_seconds(m, images, args.batch_size, args.calibration_steps,
                                                           args.device))
                for name, model in models.items()}
    times = {name: [t for chunk in chunks for t in chunk]
             for name, chunks in alternate(measures, args.calibration_rounds).items()}
    seconds = {name: statistics.median(values) for name, values in times.items()}
    steps = equal_time_steps(seconds, args.budget)
    calibration = {name: {"step_seconds": seconds[name], "steps": steps[name],
                          "parameters": num_parameters(models[name])} for name in models}
    for name, row in calibration.items():
        log(f"calibration {name}: {row['step_seconds']:.3f} s/step -> {row['steps']} steps in {args.budget:g} s")
    return calibration


def train_and_evaluate(name, config, seed, steps, data, features, args) -> tuple[dict, object]:
    from hf_autoencoders.evaluation import evaluate, quality_metrics

    model = build(config, seed, args.device)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_for(model, data.train, tmp, args, seed, steps)
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        trainer.train()
        wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    test = data.test.images[: args.max_eval_samples]
    metrics = evaluate(model, test, batch_size=256, seed=seed, progress=False)
    row = {"model": name, "seed": seed, "steps": steps, "train_wall_seconds": wall, "train_cpu_seconds": cpu,
           "test_psnr_db": metrics["psnr"], "test_ssim": metrics["ssim"], "test_loss": metrics["loss"]}
    if features is not None:
        quality = quality_metrics(model, test, features=features, samples=False, seed=seed, progress=False)
        row["reconstruction_fd_domain"] = quality["reconstruction_fd_domain"]
    log(f"{name} seed {seed}: {steps} steps in {wall:.0f} s, test PSNR {metrics['psnr']:.2f} dB")
    return row, model


def quality_section(data, args) -> tuple[dict, object]:
    from hf_autoencoders.evaluation import domain_features

    size, channels = data.train.images.shape[-1], data.train.images.shape[1]
    configs = {"vae": vae_config(args, size, channels), "vqvae": vqvae_config(args, size, channels)}
    if args.conv_vae:
        configs["vae_conv"] = conv_vae_config(args, size, channels)
    features = None
    if data.train.labels is not None:  # the features a training run's card uses: a classifier of 10,000 images
        features = domain_features(data.train.images[:10_000], data.train.labels[:10_000], epochs=args.feature_epochs,
                                   device=args.device, progress=False)
    calibration = calibrate(configs, data.train.images, args)
    runs, first_vae = [], None
    for seed in args.seeds:
        for name, config in configs.items():
            row, model = train_and_evaluate(name, config, seed, calibration[name]["steps"], data, features, args)
            runs.append(row)
            if name == "vae" and first_vae is None:
                first_vae = model
    summary = {name: {metric: mean_std([r[metric] for r in runs if r["model"] == name])
                      for metric in ("test_psnr_db", "test_ssim", "reconstruction_fd_domain", "train_wall_seconds")
                      if metric in runs[0]}
               for name in configs}
    gain = summary["vae"]["test_psnr_db"]["mean"] - summary["vqvae"]["test_psnr_db"]["mean"]
    if "vae_conv" in summary:
        summary["vae_conv"]["psnr_gain_over_vqvae_db"] = (summary["vae_conv"]["test_psnr_db"]["mean"]
                                                          - summary["vqvae"]["test_psnr_db"]["mean"])
    section = {
        "models": {name: {"config": config.to_diff_dict(), "latent_shape": latent_shape(config)}
                   for name, config in configs.items()},
        "calibration": calibration, "runs": runs, "summary": summary, "psnr_gain_over_vqvae_db": gain,
        "features": None if features is None else features.description,
    }
    return section, first_vae


def latent_shape(config) -> list[int]:
    grid = config.latent_grid_size
    return [getattr(config, "latent_channels", None) or config.embedding_dim, grid, grid]


# -------------------------------------------------------------------------------------- scaling, tiling, export


def scaling_section(vae, data, args) -> dict:
    from hf_autoencoders.evaluation import scaling_factors

    test = data.test.images[: args.max_eval_samples]
    factors = scaling_factors(vae, data.train, test, batch_size=256, progress=False)
    return {**factors, "measured_on": "every training image; checked on the test images' (z - shift_factor) * "
                                      "scaling_factor"}


def mosaics(images: torch.Tensor, count: int, side: int = 4) -> torch.Tensor:
    """`count` images made of side x side test images each (uint8, (count, C, side H, side W))."""
    need = count * side * side
    tiles = images[torch.arange(need) % len(images)]
    c, h, w = tiles.shape[1:]
    grid = tiles.view(count, side, side, c, h, w).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(count, c, side * h, side * w)


class _PeakLiveBytes:
    """A `TorchDispatchMode` that follows every tensor created while it is active and records the peak of the bytes
    of those still alive: the CPU counterpart of CUDA's `max_memory_allocated`, less what existed before (the
    parameters)."""

    def __new__(cls):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_leaves
        from torch.utils.weak import WeakIdKeyDictionary

        class PeakLiveBytes(TorchDispatchMode):
            def __init__(self):
                super().__init__()
                self.live, self.peak = WeakIdKeyDictionary(), 0

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for tensor in tree_leaves(out):
                    if isinstance(tensor, torch.Tensor):
                        storage = tensor.untyped_storage()
                        self.live[storage] = storage.nbytes()
                self.peak = max(self.peak, sum(self.live.values()))
                return out

        return PeakLiveBytes()


def peak_bytes(model, fn) -> int:
    """Peak bytes of every live tensor, the parameters included, while `fn()` runs."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    parameters = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    with _PeakLiveBytes() as tracker:
        fn()
    return parameters + tracker.peak


def tiling_section(vae, data, args) -> dict:
    from hf_autoencoders.evaluation import psnr
    from hf_autoencoders.evaluation.metrics import unit_images

    vae.eval().disable_tiling()
    images = mosaics(data.test.images, args.tiling_images).to(args.device)
    unit = images.float() / 255
    with torch.no_grad():
        latents = vae.encode(vae.to_model_range(unit)).latent_dist.mode()
        decode = lambda: vae.decode(latents).sample  # noqa: E731
        untiled = unit_images(vae, decode())
        untiled_peak = peak_bytes(vae, decode)
        vae.enable_tiling()
        tiled = unit_images(vae, decode())
        tiled_peak = peak_bytes(vae, decode)
        vae.disable_tiling()
    untiled_psnr, tiled_psnr = psnr(unit, untiled), psnr(unit, tiled)
    return {"images": list(images.shape), "tile_size": vae.config.image_size, "tile_overlap": 0.25,
            "untiled_psnr_db": untiled_psnr, "tiled_psnr_db": tiled_psnr, "tiled_psnr_drop_db": untiled_psnr - tiled_psnr,
            "tiled_vs_untiled_psnr_db": psnr(untiled, tiled), "untiled_peak_mib": untiled_peak / 2**20,
            "tiled_peak_mib": tiled_peak / 2**20, "tiled_peak_memory_ratio": tiled_peak / untiled_peak}


def export_section(vae, data, args) -> dict:
    try:
        import diffusers
    except ImportError:
        return {"skipped": "diffusers is not installed (pip install 'hf-autoencoders[diffusers]')"}
    from hf_autoencoders.diffusers_compat import export_to_diffusers

    vae = vae.float().eval()
    images = vae.to_model_range(data.test.images[:256].to(args.device).float() / 255)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        export_to_diffusers(vae, Path(tmp) / "vae")
        exported, info = diffusers.AutoencoderKL.from_pretrained(Path(tmp) / "vae", output_loading_info=True)
        exported = exported.to(args.device).eval()
        ours = vae.encode(images).latent_dist
        theirs = exported.encode(images).latent_dist
        latents = ours.sample(torch.Generator(args.device).manual_seed(0))
        decoded = (vae.decode(latents).sample - exported.decode(latents).sample).abs().max().item()
    return {"export_max_abs_diff": decoded, "encode_mean_max_abs_diff": (ours.mean - theirs.mean).abs().max().item(),
            "missing_keys": info["missing_keys"], "unexpected_keys": info["unexpected_keys"], "images": len(images)}


# -------------------------------------------------------------------------------------------------------- speed


def diffusers_loop_samples_per_second(vae, config, images, args) -> float:
    """diffusers' AutoencoderKL trained by hand: the same loss (||x - g(z)||^2 / 2c + KL, per image, averaged), the
    optimizer the Trainer builds, the same clipping and batch size."""
    import transformers

    from hf_autoencoders.training.arguments import training_arguments

    fields = training_arguments(tempfile.gettempdir(), learning_rate=args.learning_rate, use_cpu=args.device == "cpu")
    optimizer_class, optimizer_kwargs = transformers.Trainer.get_optimizer_cls_and_kwargs(fields, vae)
    optimizer = getattr(vae, "_loop_optimizer", None) or optimizer_class(vae.parameters(), **optimizer_kwargs)
    vae._loop_optimizer = optimizer
    vae.train()
    batch, variance = args.speed_batch_size, config.gaussian_variance
    start = None
    for step in range(args.speed_warmup + args.speed_steps):
        if step == args.speed_warmup:
            sync(args.device)
            start = time.perf_counter()
        index = torch.randint(len(images), (batch,))
        x = images[index].to(args.device, non_blocking=True).float() / 127.5 - 1
        with torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16, enabled=args.bf16):
            posterior = vae.encode(x).latent_dist
            reconstruction = vae.decode(posterior.sample()).sample
            loss = ((reconstruction.float() - x).pow(2).sum((1, 2, 3)) / (2 * variance) + posterior.kl()).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync(args.device)
    return args.speed_steps * batch / (time.perf_counter() - start)


def trainer_samples_per_second(model, dataset, args) -> float:
    timer = WindowTimer(args.speed_warmup, args.speed_steps, args.device)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_for(model, dataset, tmp, args, 0, args.speed_warmup + args.speed_steps, bf16=args.bf16,
                              per_device_train_batch_size=args.speed_batch_size, warmup_steps=0,
                              callbacks=[timer], logging_steps=10**6)
        trainer.train()
    return args.speed_steps * args.speed_batch_size / timer.seconds


def speed_section(args) -> dict:
    import diffusers

    from hf_autoencoders.data import ImageTensorDataset
    from hf_autoencoders.diffusers_compat import diffusers_config, to_diffusers_state_dict

    size = args.speed_image_size
    config = vae_config(args, size, 3, args.speed_block_out_channels)
    ours = build(config, 0, args.device)
    theirs = diffusers.AutoencoderKL(**diffusers_config(config))
    theirs.load_state_dict(to_diffusers_state_dict(ours))
    theirs.to(args.device)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (max(4 * args.speed_batch_size, 64), 3, size, size), dtype=torch.uint8,
                           generator=generator)
    dataset = ImageTensorDataset(images)
    device_images = images.to(args.device)
    ratios, trainer_rates, loop_rates = [], [], []
    for repeat in range(args.speed_repeats):
        arms = ["trainer", "loop"] if repeat % 2 == 0 else ["loop", "trainer"]
        rate = {}
        for arm in arms:
            if arm == "trainer":
                rate[arm] = trainer_samples_per_second(ours, dataset, args)
            else:
                rate[arm] = diffusers_loop_samples_per_second(theirs, config, device_images, args)
        ratios.append(rate["trainer"] / rate["loop"])
        trainer_rates.append(rate["trainer"])
        loop_rates.append(rate["loop"])
        log(f"speed repeat {repeat}: Trainer {rate['trainer']:.1f}, diffusers loop {rate['loop']:.1f} samples/s")
    flops = training_step_flops(ours, ours.to_model_range(images[: args.speed_batch_size].to(args.device).float()
                                                          / 255))
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    peak = matmul_flops_per_second(args.device, 8192 if args.device == "cuda" else 1024, dtype=dtype, min_seconds=1.0)
    trainer = statistics.median(trainer_rates)
    return {
        "config": config.to_diff_dict(), "image_size": size, "downsampling_factor": config.downsampling_factor,
        "batch_size": args.speed_batch_size, "bf16": args.bf16, "device": args.device,
        "parameters": num_parameters(ours), "channels_last": _channels_last(ours, args),
        "trainer_samples_per_s": trainer, "diffusers_loop_samples_per_s": statistics.median(loop_rates),
        "ratios": ratios, "vs_diffusers_ratio": statistics.median(ratios),
        "step_flops": flops, "matmul_flop_per_s": peak,
        "trainer_mfu": flops / args.speed_batch_size * trainer / peak,
    }


def _channels_last(model, args) -> bool:
    from hf_autoencoders.training.trainer import channels_last_by_default

    return channels_last_by_default(model, torch.device(args.device))


# --------------------------------------------------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_name", default=str(SHARED / "cifar10"))
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"Any of {', '.join(SECTIONS)}.")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--budget", type=float, default=900.0, help="Calibrated training seconds of each run.")
    parser.add_argument("--block_out_channels", type=int, nargs="+", default=[16, 32, 32],
                        help="The VAE's levels. The default is the cheapest per step of those tried: every ldm VAE "
                             "costs several conv VQ-VAE steps, and the comparison is at equal time.")
    parser.add_argument("--layers_per_block", type=int, default=1)
    parser.add_argument("--norm_num_groups", type=int, default=8)
    parser.add_argument("--gaussian_variance", type=float, default=0.005,
                        help="The VAE's decoder variance c in its pixel range (-1, 1): the light KL of latent "
                             "diffusion's autoencoders (MSE + 2c KL).")
    parser.add_argument("--conv_vae", action=argparse.BooleanOptionalAction, default=True,
                        help="Also train the same 8x8x4 KL-VAE on the conv backbone (vae_conv), at the same time.")
    parser.add_argument("--num_embeddings", type=int, default=512)
    parser.add_argument("--vq_hidden_size", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--warmup_steps", type=int, default=100)
    parser.add_argument("--calibration_warmup", type=int, default=3)
    parser.add_argument("--calibration_rounds", type=int, default=6)
    parser.add_argument("--calibration_steps", type=int, default=3)
    parser.add_argument("--max_eval_samples", type=int, default=None, help="Default: the whole test split.")
    parser.add_argument("--feature_epochs", type=int, default=5, help="Epochs of the FD's domain classifier.")
    parser.add_argument("--tiling_images", type=int, default=4, help="128x128 mosaics decoded in one batch.")
    parser.add_argument("--speed_image_size", type=int, default=32)
    parser.add_argument("--speed_block_out_channels", type=int, nargs="+", default=None,
                        help="Default: --block_out_channels.")
    parser.add_argument("--speed_batch_size", type=int, default=64)
    parser.add_argument("--speed_steps", type=int, default=10)
    parser.add_argument("--speed_warmup", type=int, default=3)
    parser.add_argument("--speed_repeats", type=int, default=4)
    parser.add_argument("--bf16", action="store_true", help="Speed section under bfloat16 autocast (GPU).")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when there is one).")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="Seconds: the embedded digits, tiny models, 1 seed.")
    args = parser.parse_args(argv)
    args.command = "python benchmarks/latent_autoencoder.py " + " ".join(sys.argv[1:] if argv is None else argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"--sections: unknown {unknown}; choose from {', '.join(SECTIONS)}")
    args.seeds = [int(seed) for seed in args.seeds.split(",")]
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA GPU here; leave --device out to run on the CPU.")
    if args.smoke:
        args.seeds, args.budget, args.batch_size, args.warmup_steps = args.seeds[:1], 2.0, 16, 1
        args.block_out_channels, args.num_embeddings, args.vq_hidden_size = [8, 16, 16], 32, 16
        args.calibration_warmup, args.calibration_rounds, args.calibration_steps = 1, 2, 1
        args.max_eval_samples, args.feature_epochs, args.tiling_images = 64, 1, 2
        args.speed_image_size, args.speed_batch_size, args.speed_steps = 16, 4, 2
        args.speed_warmup, args.speed_repeats = 1, 2
    args.speed_block_out_channels = args.speed_block_out_channels or args.block_out_channels
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from hf_autoencoders.data import load_image_dataset

    results = {key: None for key in TARGETS} | {"trainer_mfu": None}
    results.update(command=args.command, date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), targets=TARGETS,
                   machine=machine_info(), device=args.device, seeds=args.seeds, budget_seconds=args.budget)
    with contextlib.redirect_stdout(sys.stderr):
        needs_data = set(args.sections) - {"speed"}
        data = None
        if needs_data:
            data = load_image_dataset(None if args.smoke else args.dataset_name, progress=False)
            if not all(hasattr(split, "images") for split in (data.train, data.test)):
                raise SystemExit(f"error: {args.dataset_name} was not loaded into memory; this benchmark indexes "
                                 "uint8 image tensors.")
            results["dataset"] = "digits (embedded)" if args.smoke else args.dataset_name
            log(f"{results['dataset']}: {len(data.train)} train / {len(data.test)} test images")
        vae = None
        if "quality" in args.sections:
            results["quality"], vae = quality_section(data, args)
            results["psnr_gain_over_vqvae_db"] = results["quality"]["psnr_gain_over_vqvae_db"]
        if vae is None and needs_data - {"quality"}:  # an untrained VAE: the sections still run end to end
            vae = build(vae_config(args, data.train.images.shape[-1], data.train.images.shape[1]), 0, args.device)
            results["untrained_vae"] = "the quality section did not run: scaling, tiling and export used a fresh VAE"
        if "scaling" in args.sections:
            results["scaling"] = scaling_section(vae, data, args)
            vae.config.scaling_factor = results["scaling"]["scaling_factor"]  # the export carries them
            vae.config.shift_factor = results["scaling"]["shift_factor"]
            results["scaled_latent_std"] = results["scaling"]["scaled_test_std"]
            results["scaled_latent_mean"] = results["scaling"]["scaled_test_mean"]
        if "tiling" in args.sections:
            results["tiling"] = tiling_section(vae, data, args)
            results["tiled_psnr_drop_db"] = results["tiling"]["tiled_psnr_drop_db"]
            results["tiled_peak_memory_ratio"] = results["tiling"]["tiled_peak_memory_ratio"]
        if "export" in args.sections:
            results["export"] = export_section(vae, data, args)
            results["export_max_abs_diff"] = results["export"].get("export_max_abs_diff")
        if "speed" in args.sections:
            results["speed"] = speed_section(args)
            results["vs_diffusers_ratio"] = results["speed"]["vs_diffusers_ratio"]
            results["trainer_mfu"] = results["speed"]["trainer_mfu"]
    results["machine"]["load_average_end"] = load_average()
    print(json.dumps(rounded(results, 6), indent=2, ensure_ascii=False))
    return results


if __name__ == "__main__":
    main()
