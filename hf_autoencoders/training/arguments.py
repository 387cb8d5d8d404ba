"""The flags of a training run, as dataclasses `HfArgumentParser` reads (as in transformers' example scripts):
`ModelArguments` (which model), `DataArguments` (which images) and `AutoencoderTrainingArguments` (the
`TrainingArguments`, with defaults that suit autoencoders); `PriorArguments` for a prior over a VQ-VAE's codes; and
`ArgumentParser`, the parser of every command and example script of this library."""

import difflib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from transformers import HfArgumentParser, TrainingArguments

CODE_CACHE_FOLDER = "code_cache"  # where a prior run keeps the codes it extracted, inside its output_dir
LOGGING_STEPS, LOGGED_POINTS = 50, 20  # without --logging_steps: every 50 steps, or 20 logs over a shorter run


class ArgumentParser(HfArgumentParser):
    """transformers' `HfArgumentParser` (flags from dataclasses, or added one by one), with every flag spelled with
    underscores as in transformers' scripts also answering to its dash spelling (--output_dir or --output-dir), and
    an error as one `error: ...` line (exit status 2) that suggests the flag a mistyped one was meant to be (as
    argparse's `suggest_on_error` does from Python 3.14 on)."""

    def __init__(self, dataclass_types=(), **kwargs):
        super().__init__(dataclass_types, **kwargs)

    def add_argument(self, *names, **kwargs):
        dashed = [name.replace("_", "-") for name in names if name.startswith("--") and "_" in name]
        return super().add_argument(*names, *(name for name in dashed if name not in names), **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        self.given = list(sys.argv[1:] if args is None else args)  # for the suggestions of `error`
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        self.exit(2, f"error: {message}{self.suggestion(message)} (see `{self.prog} --help`)\n")

    def suggestion(self, message: str) -> str:
        """'; did you mean --max_steps?' when `message` says a flag is unknown or missing and a flag given is
        close to a known one."""
        if not message.startswith(("unrecognized arguments", "the following arguments are required")):
            return ""
        known = [option for option in self._option_string_actions if option.startswith("--")]
        flags = [word.split("=", 1)[0] for word in getattr(self, "given", []) if word.startswith("--")]
        guesses = [close[0] for flag in flags if flag not in known
                   for close in [difflib.get_close_matches(flag, known, n=1, cutoff=0.7)] if close]
        return f"; did you mean {' and '.join(dict.fromkeys(guesses))}?" if guesses else ""


@dataclass
class ModelArguments:
    """Which model to train. Any other config field can be set with --config_overrides."""

    model_type: str = field(default="vqvae", metadata={"help": "ae, vae or vqvae (the model families)."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Start from this trained model (a folder or Hub id) instead of a new one."}
    )
    backbone: str | None = field(
        default=None,
        metadata={"help": "mlp, conv, vit or ldm (default: conv; ldm when --block_out_channels is given). conv, "
                          "strided convolutions and residual blocks as in the VQ-VAE paper, is the sound choice for "
                          "every family and image size: its cost grows only linearly with the pixels. vit, a "
                          "transformer over patches, is for those who want patch tokens or train on GPUs, where it "
                          "scales; docs/results.md compares it with conv at equal training time. mlp suits small "
                          "images only: its weights grow with the pixels. ldm is the autoencoder of latent diffusion "
                          "in diffusers' AutoencoderKL / VQModel layout (ResNet levels, GroupNorm, mid-block "
                          "attention), pixels in [-1, 1]: choose it to train or fine-tune the VAE of a diffusion "
                          "model and use it in diffusers' pipelines."},
    )
    latent_dim: int | None = field(default=None, metadata={"help": "AE/VAE latent size."})
    latent_channels: int | None = field(
        default=None,
        metadata={"help": "AE/VAE: make the latent a map of this many channels on the backbone's grid, (c, H / f, "
                          "W / f), the input of a latent diffusion model (default with ldm: 4). More channels "
                          "reconstruct better but give the diffusion model a richer latent to learn "
                          "(docs/models.md)."},
    )
    block_out_channels: list[int] | None = field(
        default=None,
        metadata={"help": "The ldm backbone's channels per level, e.g. 32 64 64 (selects backbone ldm): n levels "
                          "downsample by f = 2^(n - 1); the first level, at full resolution, costs the most."},
    )
    layers_per_block: int | None = field(
        default=None, metadata={"help": "ldm: ResNet blocks per encoder level (the decoder has one more); default 1."}
    )
    pixel_range: list[float] | None = field(
        default=None,
        metadata={"help": "The range of the model's pixels: 0 1, or -1 1 as diffusers' pipelines expect (default: -1 "
                          "1 for ldm, 0 1 otherwise). The image processor and the batches follow it."},
    )
    train_decoder_only: bool = field(
        default=False,
        metadata={"help": "With --model_name_or_path (a run folder, or a diffusers AutoencoderKL / VQModel folder): "
                          "train the decoder only, the encoder, its quant_conv and the codebook frozen, so that the "
                          "latents, and a diffusion model trained on them, stay valid."},
    )
    hidden_size: int | None = field(default=None, metadata={"help": "Backbone width."})
    likelihood: str | None = field(default=None, metadata={"help": "gaussian, bernoulli or discretized_logistic."})
    kl_weight: float | None = field(default=None, metadata={"help": "VAE beta."})
    num_embeddings: int | None = field(default=None, metadata={"help": "VQ-VAE codebook size K."})
    embedding_dim: int | None = field(default=None, metadata={"help": "VQ-VAE code dimension d."})
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Other config fields as key=value pairs separated by commas, values in JSON, e.g. "
                          "'dead_code_threshold=20,quantizer=fsq,fsq_levels=[8,5,5,5]'."},
    )

    def __post_init__(self):
        from ..models import autoencoder_classes

        autoencoder_classes(self.model_type)  # refuses an unknown family, naming the known ones


@dataclass
class DataArguments:
    """Which images to train on."""

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "A Hub id (ylecun/mnist), a local folder, or nothing for the embedded digits (no network)."},
    )
    train_dir: str | None = field(
        default=None,
        metadata={"help": "A folder of training images (PNG, JPEG, ...; one subfolder per class, or none), as "
                  "transformers' image examples spell it, with or without --dataset_name imagefolder: the same as "
                  "--dataset_name DIR. A test split is carved from it unless --validation_dir is given."},
    )
    validation_dir: str | None = field(
        default=None, metadata={"help": "With --train_dir: a folder of test images, laid out as --train_dir."}
    )
    image_column: str | None = field(default=None, metadata={"help": "Image column (found by type if not given)."})
    label_column: str | None = field(default=None, metadata={"help": "Label column (found by type if not given)."})
    image_size: int | None = field(default=None, metadata={"help": "Resize images to this size."})
    num_channels: int | None = field(default=None, metadata={"help": "1 (grayscale) or 3 (RGB)."})
    binarize: bool = field(default=False, metadata={"help": "Threshold pixels at 0.5 (for a Bernoulli likelihood)."})
    stochastic_binarization: bool = field(
        default=False,
        metadata={"help": "With --binarize, draw pixels ~ Bernoulli(intensity) afresh for every batch (dynamic "
                  "binarization, as in the IWAE paper) instead of thresholding."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep the first N training images (only those are ever decoded)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep the first N test images (only those are ever decoded)."}
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "The dataset's configuration, as in datasets.load_dataset(name, config)."}
    )
    streaming: bool = field(
        default=False,
        metadata={"help": "Stream the dataset (a Hub id or a large local folder) instead of preparing it: nothing is "
                  "read up front, the train split is shuffled among --shuffle_buffer_size undecoded rows (anew each "
                  "epoch), images are decoded per batch in the DataLoader workers, and each process of a "
                  "multi-process run reads its own shards. Needs --max_steps."},
    )
    shuffle_buffer_size: int = field(
        default=10_000,  # hf_autoencoders.data.SHUFFLE_BUFFER_SIZE
        metadata={"help": "With --streaming: how many undecoded rows the train split is shuffled among."},
    )
    in_memory_max_gb: float = field(
        default=2.0,  # hf_autoencoders.data.IN_MEMORY_MAX_GB
        metadata={"help": "A split whose decoded images (N x C x H x W bytes) take at most this many GB is decoded "
                  "once, up front, into the decoded cache and memory-mapped: the fastest steps, and one copy per "
                  "machine. A larger split is decoded per batch in the DataLoader workers (--dataloader_num_workers), "
                  "so memory does not grow with the dataset. 0 decodes every split per batch."},
    )
    decoded_cache: bool = field(
        default=True,
        metadata={"help": "Keep splits decoded up front on disk (--decoded_cache_dir) and map them; "
                  "--no_decoded_cache decodes them into each process's memory instead, every run."},
    )
    decoded_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Where decoded splits are kept: one uint8 .npy file of N x C x H x W bytes per split, with "
                  "a JSON manifest holding its SHA-256 (checked at every load; a damaged or stale file is rebuilt). "
                  "Default: <HF_DATASETS_CACHE>/hf_autoencoders_decoded "
                  "(~/.cache/huggingface/datasets/hf_autoencoders_decoded). Safe to delete."},
    )
    skip_bad_images: bool = field(
        default=False,
        metadata={"help": "Skip images that cannot be decoded, logging each with its split and row, instead of "
                  "stopping with an error that names the image."},
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow writing into an output_dir that already holds files."}
    )

    def __post_init__(self):
        if self.validation_dir is not None and self.train_dir is None:
            raise ValueError("--validation_dir goes with --train_dir (the training images); pass both.")
        if self.train_dir is not None and self.dataset_name not in (None, "imagefolder"):
            raise ValueError(f"--train_dir names the training images, so it does not go with --dataset_name "
                             f"{self.dataset_name}: pass one or the other.")
        if self.dataset_name == "imagefolder" and self.train_dir is None:
            raise ValueError("--dataset_name imagefolder needs the folder of images: add --train_dir DIR (and "
                             "--validation_dir DIR for test images), as in transformers' image examples, or pass "
                             "the folder itself: --dataset_name DIR.")
        if self.in_memory_max_gb < 0:
            raise ValueError(f"--in_memory_max_gb must be >= 0 (0 decodes every split per batch), got "
                             f"{self.in_memory_max_gb}.")
        if self.shuffle_buffer_size < 1:
            raise ValueError(f"--shuffle_buffer_size must be a positive number of rows, got "
                             f"{self.shuffle_buffer_size}.")
        if self.stochastic_binarization and not self.binarize:
            raise ValueError("--stochastic_binarization only applies with --binarize; pass both.")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be a positive number of images, got {value}; leave it out to use "
                                 "the whole split.")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"--image_size must be a positive number of pixels, got {self.image_size}; leave it out "
                             "to keep the images' own size.")
        if self.num_channels not in (None, 1, 3):
            raise ValueError(f"--num_channels must be 1 (grayscale) or 3 (RGB), got {self.num_channels}; leave it out "
                             "to keep the images' own.")


    def source(self) -> tuple[str | None, dict]:
        """What `load_image_dataset` reads, as (name_or_path, load_kwargs): --dataset_name, or the image folders of
        --train_dir and --validation_dir (datasets' imagefolder, the latter the test split)."""
        if self.validation_dir is not None:
            files = {"train": str(Path(self.train_dir) / "**"), "test": str(Path(self.validation_dir) / "**")}
            return "imagefolder", {"data_files": files}
        return self.train_dir or self.dataset_name, {}


@dataclass
class AutoencoderTrainingArguments(TrainingArguments):
    """`TrainingArguments` with defaults that suit autoencoders on small images."""

    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate."})
    per_device_train_batch_size: int = field(default=128, metadata={"help": "Batch size per device."})
    per_device_eval_batch_size: int = field(default=256, metadata={"help": "Eval batch size per device."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    logging_steps: float | None = field(
        default=None,
        metadata={"help": "Log every N steps (a number in (0, 1): that fraction of the run). Default: every "
                  f"{LOGGING_STEPS} steps, or more often on a short run so that its loss curve has "
                  f"{LOGGED_POINTS} points."},
    )
    save_steps: float = field(default=500, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep the last N checkpoints."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Must stay False for image inputs."})
    fid: bool = field(
        default=True,
        metadata={"help": "With --do_eval, also measure the Fréchet distance, KID, precision, recall, density and "
                  "coverage of the test reconstructions and of as many samples, in the features of a classifier "
                  "trained on the labelled training images (cached), for the model card. Needs labels; false skips "
                  "it."},
    )
    generability: bool = field(
        default=False,
        metadata={"help": "VQ-VAE, with --do_eval: also measure how well its codes can be generated, for the model "
                  "card: train the library's default prior on them for a fixed budget, then the Fréchet distance, "
                  "precision and recall of its samples and its bits per image (training.generability; minutes). "
                  "Compare tokenizers on it beside the reconstruction figures."},
    )
    skip_nonfinite_steps: bool = field(
        default=False,
        metadata={"help": "Skip an optimizer step whose loss or gradient norm is NaN or infinite (and count it in the "
                  "logs) instead of stopping the run; 10 skipped steps in a row still stop it."},
    )
    hub_license: str | None = field(
        default=None,
        metadata={"help": "The license of the model, written into its card (e.g. apache-2.0, mit, cc-by-4.0)."},
    )
    channels_last: bool | None = field(
        default=None,
        metadata={"help": "Keep 4-d weights, and so the convolutions' activations, in channels-last memory order. "
                  "Default: on for the conv backbone on CPU, where oneDNN's convolutions are faster in that layout."},
    )

    # The tokenizer recipe (training/recipe.py, docs/models.md "The tokenizer recipe"): training settings, not model
    # config: the saved model holds neither the perceptual network nor the discriminator.
    perceptual_weight: float = field(
        default=0.0,
        metadata={"help": "Weight w_p of the perceptual term: the loss gains w_p d(x^, x) per pixel, d an LPIPS-style "
                  "distance (--perceptual_network). Reconstructions trained on pixel error alone are blurry; this "
                  "term keeps texture and edges at a small cost in PSNR. The tokenizer recipes weight it about as "
                  "much as the per-pixel reconstruction error; 0 turns it off."},
    )
    perceptual_network: str = field(
        default="rotation",
        metadata={"help": "The network of the perceptual distance. rotation: a small CNN trained on the training "
                  "images to tell how they were rotated (self-supervised: no labels, no download; trained once and "
                  "cached). domain: the same CNN trained on the labels; it is kin to the network the domain Fréchet "
                  "distances are measured with, so it flatters them. lpips: the published LPIPS-VGG, whose weights "
                  "are downloaded, or read from --lpips_weights. Figures of different networks do not compare, and "
                  "only lpips gives LPIPS values."},
    )
    lpips_weights: str | None = field(
        default=None,
        metadata={"help": "With --perceptual_network lpips: a folder holding torchvision's vgg16-397923af.pth and "
                  "lpips' v0.1 vgg.pth (or one file with both sets of keys), for machines without internet. The "
                  "keys are checked: weights that do not fit are refused, never partly loaded."},
    )
    disc_weight: float = field(
        default=0.0,
        metadata={"help": "Weight w_adv of the adversarial term (a PatchGAN discriminator); 0 trains without one. "
                  "With --adaptive_weight it is the ratio of the adversarial gradient to the reconstruction gradient "
                  "at the decoder's last layer (the recipes use a half to one); raise it for sharper images, lower "
                  "it if the collapse guard fires."},
    )
    disc_start: int | None = field(
        default=None,
        metadata={"help": "The optimizer step at which the discriminator and the adversarial term start (default: "
                  "halfway through the run). Start it once the reconstructions are good: a discriminator that starts "
                  "on blurry reconstructions wins easily, and its gradients can wreck them."},
    )
    disc_loss: str = field(
        default="hinge",
        metadata={"help": "hinge (VQGAN, LDM, LlamaGen) or non_saturating (the original GAN's generator loss, "
                  "StyleGAN's choice)."},
    )
    adaptive_weight: bool = field(
        default=True,
        metadata={"help": "Scale the adversarial term by ||grad L_rec|| / ||grad L_G|| at the decoder's last layer "
                  "(VQGAN's adaptive weight), so --disc_weight means the same whatever the scale of the losses; "
                  "false uses --disc_weight as it is (LlamaGen's default)."},
    )
    disc_learning_rate: float | None = field(
        default=None, metadata={"help": "The discriminator's Adam learning rate (default: --learning_rate)."}
    )
    disc_channels: int | None = field(
        default=None,
        metadata={"help": "Channels of the discriminator's first layer (doubling at each downsampling). Default: "
                  "in proportion to the images, half the image size between 16 and 64 (64, the recipes' width, "
                  "from 128 x 128 images on): a full-width discriminator on small images costs several steps of "
                  "the autoencoder and, measured, did not reconstruct better (benchmarks/README.md)."},
    )
    disc_num_layers: int = field(
        default=3, metadata={"help": "Downsampling layers of the PatchGAN discriminator (fewer for small images)."}
    )
    lecam_weight: float = field(
        default=0.0,
        metadata={"help": "Weight of LeCAM regularisation of the discriminator (keeps its predictions on real and "
                  "fake images from drifting apart; helps on small datasets). 0: off."},
    )
    r1_weight: float = field(
        default=0.0,
        metadata={"help": "Weight gamma of the R1 gradient penalty on real images (gamma/2 E||grad D(x)||²): "
                  "steadies the discriminator at the cost of a second backward pass. 0: off."},
    )
    gan_guard_margin: float = field(
        default=2.0,
        metadata={"help": "The collapse guard: while the discriminator is on, the PSNR of a fixed batch of held-out "
                  "images is measured every --gan_guard_steps; a fall of more than this many dB below its value at "
                  "--disc_start is a collapse, logged, written into the results and the model card, and acted on "
                  "as --gan_guard_action says."},
    )
    gan_guard_action: str = field(
        default="lower",
        metadata={"help": "What a collapse does: lower (log and record it, and halve the adversarial weight at every "
                  "check it lasts: the default, since a discriminator that wins early can wreck reconstructions "
                  "for good), warn (only log and record it: to watch a GAN phase as it is) or stop (end training; "
                  "the weights of the last check that passed are the ones saved)."},
    )
    gan_guard_steps: int | None = field(
        default=None, metadata={"help": "Steps between the collapse guard's checks (default: --logging_steps)."}
    )
    use_ema: bool = field(
        default=False,
        metadata={"help": "Keep an exponential moving average of the weights (decay --model_ema_decay), evaluate it "
                  "beside the trained weights and save it as the model (see --save_ema_weights): averaged weights "
                  "usually reconstruct better, and smooth out a GAN's oscillations."},
    )
    model_ema_decay: float = field(
        default=0.999,
        metadata={"help": "Decay of the weights' EMA (not the VQ codebook's ema_decay), with a warm-up for the "
                  "first steps: closer to 1 averages over more steps, for long runs."},
    )
    save_ema_weights: bool = field(
        default=True,
        metadata={"help": "With --use_ema, save the averaged weights as the model (the trained ones stay in the "
                  "checkpoints); false saves the trained weights. The model card gives the metrics of both."},
    )

    def __post_init__(self):
        self.logging_steps_given = self.logging_steps is not None  # else `logging_steps_for` adapts it to the run
        if self.logging_steps is None:
            self.logging_steps = LOGGING_STEPS
        accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
        if not (accelerator.is_available() if accelerator else torch.cuda.is_available()):
            # Say so to accelerate: without it, processes launched by torchrun on CPUs would each train alone
            # (no DDP, no sharded evaluation).
            self.use_cpu = True
        # --gradient_checkpointing (diffusers' name, which users of this field know) is transformers' deprecated alias
        # of activation_checkpointing: hand it over under the new name, so no deprecation warning is printed
        for old_name, new_name in (("gradient_checkpointing", "activation_checkpointing"),
                                   ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs")):
            if getattr(self, new_name, None) is None and getattr(self, old_name, None) is not None:
                setattr(self, new_name, getattr(self, old_name))
                setattr(self, old_name, None)
        super().__post_init__()
        if not torch.cuda.is_available():  # pinned memory only helps host-to-GPU copies
            self.dataloader_pin_memory = False
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be a positive integer, got {getattr(self, name)}.")
        if self.do_train and self.max_steps == 0:
            raise ValueError("--max_steps 0 trains nothing; pass a positive number of steps, or leave it out (-1) to "
                             "train for --num_train_epochs.")
        if self.do_train and self.max_steps < 0 and not self.num_train_epochs > 0:
            raise ValueError(f"--num_train_epochs {self.num_train_epochs:g} trains nothing; pass a positive number of "
                             "epochs or --max_steps. (To evaluate a trained model without training, drop --do_train.)")
        self._check_recipe()

    def _check_recipe(self) -> None:
        from ..evaluation.perceptual import PERCEPTUAL_NETWORKS
        from .adversarial import GAN_LOSSES, GUARD_ACTIONS

        for name in ("perceptual_weight", "disc_weight", "lecam_weight", "r1_weight"):
            value = getattr(self, name)
            if not (value >= 0 and value != float("inf")):
                raise ValueError(f"--{name} must be a finite number >= 0 (0 turns it off), got {value}.")
        choices = {"perceptual_network": PERCEPTUAL_NETWORKS, "disc_loss": GAN_LOSSES,
                   "gan_guard_action": GUARD_ACTIONS}
        for name, known in choices.items():
            if getattr(self, name) not in known:
                raise ValueError(f"--{name} must be one of {', '.join(known)}, got {getattr(self, name)!r}.")
        if self.lpips_weights is not None and self.perceptual_network != "lpips":
            raise ValueError("--lpips_weights applies to --perceptual_network lpips only.")
        if self.disc_start is not None and self.disc_start < 0:
            raise ValueError(f"--disc_start must be an optimizer step >= 0, got {self.disc_start}.")
        for name in ("disc_channels", "disc_num_layers", "gan_guard_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be a positive integer, got {value}.")
        if not 0 <= self.model_ema_decay < 1:
            raise ValueError(f"--model_ema_decay must lie in [0, 1), got {self.model_ema_decay}.")
        if self.disc_learning_rate is not None and not self.disc_learning_rate > 0:
            raise ValueError(f"--disc_learning_rate must be positive, got {self.disc_learning_rate}.")
        if not self.gan_guard_margin > 0:
            raise ValueError(f"--gan_guard_margin must be a positive number of dB, got {self.gan_guard_margin}.")

    @cached_property
    def _setup_devices(self) -> torch.device:
        """The Trainer's device set-up, refusing a process launched as one of several (`WORLD_SIZE` > 1, as
        torchrun and accelerate launch set it) that did not join their process group: each would train alone and
        write the same output folder."""
        device = TrainingArguments._setup_devices.func(self)
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        joined = self.distributed_state.num_processes if self.distributed_state is not None else 1
        if launched > 1 and joined != launched:
            raise ValueError(
                f"this process is one of {launched} processes launched together (WORLD_SIZE={launched}), but it did "
                f"not join their process group, so each would train alone into the same --output_dir. Pass "
                "--ddp_backend gloo on CPUs (nccl on NVIDIA GPUs), or launch a single process with python."
            )
        return device


def logging_steps_for(total_steps: int) -> int:
    """How often a run of `total_steps` steps logs when --logging_steps is not given: every `LOGGING_STEPS` steps,
    or often enough for `LOGGED_POINTS` logs on a shorter run, so that even a short run draws a loss curve."""
    return max(1, min(LOGGING_STEPS, total_steps // LOGGED_POINTS))


def training_arguments(output_dir, **fields) -> AutoencoderTrainingArguments:
    """The `AutoencoderTrainingArguments` of a run made from Python (studies, benchmarks, `fit`, notebooks): no
    checkpoints, no progress bar, no trackers, unless `fields` (any `TrainingArguments` field) say otherwise."""
    defaults = dict(save_strategy="no", logging_steps=50, disable_tqdm=True, report_to="none")
    return AutoencoderTrainingArguments(output_dir=str(output_dir), **{**defaults, **fields})


@dataclass
class PriorArguments:
    """Which VQ-VAE's codes to model, on which images, and the prior's size (other sizes: the config's defaults)."""

    vqvae: str = field(metadata={"help": "Folder (or Hub id) of the trained VQ-VAE whose codes the prior models."})
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "The VQ-VAE's training images: a Hub id, a local folder, or nothing for the embedded "
                          "digits. They are resized to the VQ-VAE's image_size and num_channels."},
    )
    binarize: bool | None = field(
        default=None,
        metadata={"help": "Threshold pixels at 0.5 before encoding; default: as the VQ-VAE's saved image processor."},
    )
    image_column: str | None = field(default=None, metadata={"help": "Image column (found by type if not given)."})
    label_column: str | None = field(
        default=None, metadata={"help": "Label column, integers 0..C-1, for --class_conditional (found by type if not "
                                        "given)."}
    )
    class_conditional: bool = field(
        default=False,
        metadata={"help": "Model p(codes | class label) on a labelled dataset: sample a class with `sample "
                          "--class_label`, and guide toward it with --guidance_scale (classifier-free guidance)."},
    )
    class_dropout: float | None = field(
        default=None,
        metadata={"help": "Class-conditional transformer prior: the probability that a training map is shown with "
                          "the null class instead of its own, so that the prior also learns p(codes) and can be "
                          "sampled with classifier-free guidance. Default: 0.1 with --class_conditional (as LlamaGen "
                          "and DiT); 0 trains no null class (no guidance)."},
    )
    prior_type: str = field(
        default="transformer",
        metadata={"help": "transformer (a GPT-2 causal LM over code tokens, sampled by generate() with the key/value "
                          "cache, with classifier-free guidance when class-conditional; loads with plain "
                          "AutoModelForCausalLM) or pixelcnn (a gated PixelCNN, as in the VQ-VAE paper). The "
                          "transformer reaches a lower test NLL for the same training time and samples much faster "
                          "(benchmarks/README.md); pixelcnn is for reproducing the paper's prior and for existing "
                          "PixelCNN checkpoints."},
    )
    hidden_size: int | None = field(
        default=None, metadata={"help": "Prior width: PixelCNN channels (default 64) or transformer n_embd (128)."}
    )
    num_layers: int | None = field(
        default=None, metadata={"help": "Gated PixelCNN layers (default 8) or transformer blocks (default 3)."}
    )
    kernel_size: int | None = field(default=None, metadata={"help": "PixelCNN only: odd kernel width (default 5)."})
    num_heads: int | None = field(
        default=None, metadata={"help": "Transformer only: attention heads, dividing --hidden_size (default 4)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training images."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N test images."})
    code_cache_dir: str | None = field(
        default=None, metadata={"help": f"Where extracted codes are kept (default: <output_dir>/{CODE_CACHE_FOLDER})."}
    )
    num_samples: int = field(default=64, metadata={"help": "Images in samples.png and uniform_samples.png."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow writing into an output_dir that already holds files."}
    )

    def __post_init__(self):
        if self.prior_type not in ("pixelcnn", "transformer"):
            raise ValueError(f"--prior_type must be transformer or pixelcnn, got {self.prior_type!r}.")
        for name in ("max_train_samples", "max_eval_samples", "num_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be a positive number of images, got {value}.")
        only = {"kernel_size": "pixelcnn", "num_heads": "transformer"}
        for name, kind in only.items():
            if getattr(self, name) is not None and self.prior_type != kind:
                raise ValueError(f"--{name} applies to --prior_type {kind} only, not {self.prior_type} (the default "
                                 f"is transformer); pass --prior_type {kind} or drop --{name}.")
        if self.class_dropout is not None:
            if not 0 <= self.class_dropout < 1:
                raise ValueError(f"--class_dropout must lie in [0, 1), got {self.class_dropout}.")
            if self.class_dropout > 0 and not self.class_conditional:
                raise ValueError("--class_dropout applies to a class-conditional prior; add --class_conditional.")
            if self.class_dropout > 0 and self.prior_type != "transformer":
                raise ValueError("--class_dropout applies to --prior_type transformer: a PixelCNN prior has no null "
                                 "class to train.")


def training_parser(model_type: str | None = None) -> ArgumentParser:
    """The parser of a training run's flags: `ModelArguments`, `DataArguments` and `AutoencoderTrainingArguments`,
    with --model_type defaulting to `model_type` where it is given."""
    parser = ArgumentParser((ModelArguments, DataArguments, AutoencoderTrainingArguments))
    if model_type is not None:
        parser.set_defaults(model_type=model_type)
    return parser


def prior_parser() -> ArgumentParser:
    """The parser of a prior run's flags: `PriorArguments` and `AutoencoderTrainingArguments`."""
    return ArgumentParser((PriorArguments, AutoencoderTrainingArguments))


def parse_overrides(text: str | None) -> dict:
    """'a=1,b=true,levels=[8,5,5,5],name=x' -> {"a": 1, "b": True, "levels": [8, 5, 5, 5], "name": "x"}: values
    are read as JSON where they parse, else kept as strings; commas inside brackets do not split."""
    overrides = {}
    for item in filter(None, (part.strip() for part in re.split(r",(?![^\[]*\])", text or ""))):
        if "=" not in item:
            raise ValueError(f"--config_overrides item {item!r} is not of the form key=value.")
        key, value = (s.strip() for s in item.split("=", 1))
        try:
            overrides[key] = json.loads(value.lower() if value.lower() in ("true", "false", "null") else value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def build_config(model_args: ModelArguments, image_size: int, num_channels: int):
    """A new config of the requested family, shaped for the data; or the config of `model_name_or_path` with the
    requested settings that leave its architecture as it is (`fine_tuning_config`)."""
    from transformers import AutoConfig

    from ..diffusers_compat import config_from_diffusers, read_diffusers_config
    from ..models import autoencoder_classes

    config_class, _ = autoencoder_classes(model_args.model_type)
    if model_args.model_name_or_path is not None:
        theirs = read_diffusers_config(model_args.model_name_or_path)
        config = (AutoConfig.from_pretrained(model_args.model_name_or_path) if theirs is None
                  else config_from_diffusers(theirs, model_args.model_name_or_path))
        if config.model_type != config_class.model_type:
            family = getattr(config, "family", None)
            hint = f"pass --model_type {family}" if family else "pass the folder of an autoencoder"
            raise ValueError(
                f"{model_args.model_name_or_path} holds a {config.model_type!r} model, but --model_type "
                f"{model_args.model_type} trains {config_class.model_type!r}; {hint} or another folder."
            )
        return fine_tuning_config(config, model_args)
    known = set(config_class.__dataclass_fields__)
    settings = requested_settings(model_args)
    backbone = "ldm" if "block_out_channels" in settings else "conv"  # the channels of levels are ldm's
    values = {"image_size": image_size, "num_channels": num_channels, "backbone": backbone}
    for key, value in settings.items():
        if key not in known:
            raise ValueError(f"--{key} does not apply to --model_type {model_args.model_type}: it is not a field of "
                             f"{config_class.__name__}.")
        values[key] = value
    return config_class(**values)


def fine_tuning_config(config, model_args: ModelArguments):
    """The config of a trained model (`config`, of --model_name_or_path) trained further with the settings this
    command sets (`requested_settings`): those that keep every weight of the model as it is (loss weights such as
    kl_weight or commitment_cost, the likelihood's variance, dead-code restarts, ...) are applied; one that would
    add, drop or reshape a weight (latent_dim, hidden_size, backbone, num_embeddings, quantizer, ...) is refused,
    naming the weights it changes: the trained weights could not be loaded into it."""
    requested = requested_settings(model_args)
    fields = set(type(config).__dataclass_fields__)
    for key in requested:
        if key not in fields:
            raise ValueError(f"{_flag(model_args, key, requested[key])} does not apply to --model_name_or_path "
                             f"{model_args.model_name_or_path}: it is not a field of {type(config).__name__}.")
    changed = {key: value for key, value in requested.items() if _same(getattr(config, key)) != _same(value)}
    if not changed:
        return config
    shapes = _weight_shapes(config)
    for key, value in changed.items():
        alone = _weight_shapes(type(config).from_dict({**config.to_dict(), key: value}))
        if alone != shapes:
            differing = sorted(set(alone) ^ set(shapes) | {k for k in alone.keys() & shapes if alone[k] != shapes[k]})
            shown = ", ".join(differing[:3]) + (f" and {len(differing) - 3} more" if len(differing) > 3 else "")
            raise ValueError(
                f"{_flag(model_args, key, value)} changes the architecture of --model_name_or_path "
                f"{model_args.model_name_or_path} (its weights {shown} would not fit), so it cannot be trained further "
                f"with it. Leave the flag out to fine-tune the model as it is ({key}={getattr(config, key)!r}), or "
                "train a new model without --model_name_or_path."
            )
    return type(config).from_dict({**config.to_dict(), **changed})


def _weight_shapes(config) -> dict[str, tuple]:
    """{name: shape} of every weight and buffer of the model `config` builds (on the meta device: nothing
    allocated)."""
    from transformers import AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(config)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def _same(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def _flag(model_args: ModelArguments, key: str, value) -> str:
    """How the command line set `key`: "--latent_dim 8", or "--config_overrides quantizer=fsq"."""
    if key in _MODEL_FLAGS and getattr(model_args, key) is not None:
        return f"--{key} {value}"
    return f"--config_overrides {key}={json.dumps(value) if not isinstance(value, str) else value}"


_MODEL_FLAGS = ("backbone", "latent_dim", "latent_channels", "block_out_channels", "layers_per_block", "pixel_range",
                "hidden_size", "likelihood", "kl_weight", "num_embeddings", "embedding_dim")


def requested_settings(model_args: ModelArguments) -> dict:
    """The config fields this command sets explicitly: the model flags given and --config_overrides."""
    values = {name: getattr(model_args, name) for name in _MODEL_FLAGS if getattr(model_args, name) is not None}
    overrides = parse_overrides(model_args.config_overrides)
    if "model_type" in overrides:
        raise ValueError("--config_overrides: model_type cannot be overridden; the family is chosen with --model_type "
                         "(ae, vae or vqvae).")
    return {**values, **overrides}
