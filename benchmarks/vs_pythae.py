"""Against pythae: VAE (binarized MNIST, Bernoulli) and VQ-VAE (grey MNIST, squared error) trained by our Trainer
and by pythae's `BaseTrainer` on the same networks and initial weights; samples/s, the ceiling a hand-written loop
on those networks gives, and test quality after the same samples. Headline `vs_pythae_ratio` (target >= 1.5).

    pip install -e ".[benchmark]"                            # pythae
    python benchmarks/vs_pythae.py [--quick | --smoke]
"""

from __future__ import annotations

import copy
import math
import tempfile
import time

import torch
from _common import WindowTimer, build_model, geomean, log, section_main, subset, sync, trainer_args, unit
from overhead import loop_samples_per_second

import hf_autoencoders as H
from hf_autoencoders.data import ImageCollator
from hf_autoencoders.models import standard_normal_log_prob
from hf_autoencoders.training.trainer import AutoencoderTrainer, uses_channels_last

HEADLINES = {"vs_pythae_ratio": "ratio", "vs_pythae_ceiling_ratio": "ceiling_ratio", "vs_pythae_skipped": "skipped"}


def pythae_comparison(train, test, cfg) -> dict:
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
            return self.log_likelihood(x, z) + standard_normal_log_prob(z) - posterior.log_prob(z)

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
        row["channels_last"] = uses_channels_last(ours, trainer_args(tempfile.gettempdir(), batch_size, 1))

        # ours: AutoencoderTrainer, same optimizer as pythae's default (Adam = AdamW with weight decay 0)
        timer = WindowTimer(warmup, math.ceil(len(train_part) / batch_size) - warmup, device)
        with tempfile.TemporaryDirectory() as tmp:
            args = trainer_args(tmp, batch_size, -1, device, num_train_epochs=1, lr_scheduler_type="constant",
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


def run(bench) -> dict:
    return pythae_comparison(bench.train, bench.test, bench.cfg)


if __name__ == "__main__":
    section_main("vs_pythae", __doc__)
