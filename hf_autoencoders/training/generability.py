"""How well a VQ-VAE's codes can be generated: the figure to read beside its reconstruction quality when choosing a
tokenizer for generation. (Reconstruction alone does not say it: VA-VAE, Yao et al., 2025, reports tokenizers with
a better reconstruction FID giving a worse generation FID.)

`generability` trains the library's default prior (the transformer prior at its default size, class-conditional
where the images have labels, sampled with its default guidance) on the VQ-VAE's codes of the training images for a
fixed budget (`GENERABILITY_STEPS` steps of `GENERABILITY_BATCH_SIZE` code maps), samples as many images as there
are test images (with the test images' labels), and reports, against the test images:

- `generability_sample_fd_<features>`, `generability_sample_precision_<features>`,
  `generability_sample_recall_<features>`: the samples' Fréchet distance, precision and recall in each of `features`
  (domain features, and Inception's where weights are given);
- `generability_bits_per_image`: the prior's test NLL of a code map, -log2 p(c(x) | y), in bits (the code length of
  an image under the prior: fewer bits, more predictable codes);
- `generability_prior`: what was trained, for the card.

The same budget for every VQ-VAE makes the figures comparable between tokenizers of one dataset; they say nothing
about how far a longer-trained prior would go. `hf-autoencoders evaluate RUN --generability` and the `--generability`
flag of a VQ-VAE training run (which puts them on the card) both call it.
"""

import math
import tempfile

import torch
from transformers import AutoModelForCausalLM

from ..data import ImageCollator
from ..evaluation import feature_metrics
from ..evaluation.priors import code_map_nlls
from ..models import code_priors
from .prior import CodeDataset, extract_codes, fit_prior

GENERABILITY_STEPS = 2000
GENERABILITY_BATCH_SIZE = 128
GENERABILITY_LEARNING_RATE = 1e-3
GENERABILITY_WARMUP_STEPS = 100


@torch.no_grad()
def _images(dataset, collator, batch_size: int) -> torch.Tensor:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collator)
    return torch.cat([batch["pixel_values"] for batch in loader])


def generability(vqvae, train_set, test_set, *, features, collator=None, steps: int = GENERABILITY_STEPS,
                 seed: int = 0, batch_size: int = 256, progress: bool = True) -> dict:
    """
    Train the default prior on `vqvae`'s codes of `train_set` for `steps` steps, sample it, and score the samples
    against `test_set` (see the module docstring).

    Args:
        vqvae: a trained `VQVAEModel` (left in eval mode).
        train_set, test_set: datasets of `{"pixel_values", ["labels"]}` items (`load_image_dataset`'s splits); with
            labels in both, the prior is class-conditional and the samples take the test images' labels.
        features: a list of `ImageFeatures` (`evaluation.domain_features`, `evaluation.inception_features`) to
            measure FD, precision and recall in; may be empty (bits per image only).
        collator: turns items into pixel_values in [0, 1] (default `ImageCollator()`); as the VQ-VAE was trained.
        steps: training steps of the prior (the fixed budget).
        seed: of the prior's initialisation, training and samples.
    """
    if not hasattr(vqvae, "check_prior"):  # a model with codes that a prior can model
        raise ValueError(f"Generability is a VQ-VAE's figure (how well its codes can be generated), but this model is "
                         f"a {getattr(vqvae.config, 'display_name', vqvae.config.model_type)}.")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}.")
    collator = collator or ImageCollator()
    vqvae.eval()
    train_codes, train_labels = extract_codes(vqvae, train_set, batch_size, None, collator, progress)
    test_codes, test_labels = extract_codes(vqvae, test_set, batch_size, None, collator, progress)
    conditional = train_labels is not None and test_labels is not None
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1 if conditional else 0
    config = code_priors.transformer_prior_config(
        vqvae.config.num_embeddings, vqvae.config.latent_grid_size, num_classes=num_classes,
        vqvae_identity=vqvae.identity())
    torch.manual_seed(seed)
    prior = AutoModelForCausalLM.from_config(config).to(vqvae.device)
    with tempfile.TemporaryDirectory() as tmp:
        fit_prior(prior, CodeDataset(train_codes, train_labels if conditional else None), output_dir=tmp,
                  max_steps=steps, per_device_train_batch_size=GENERABILITY_BATCH_SIZE,
                  learning_rate=GENERABILITY_LEARNING_RATE, warmup_steps=min(GENERABILITY_WARMUP_STEPS, steps // 10),
                  seed=seed)
    prior.eval()
    test_codes = CodeDataset(test_codes, test_labels if conditional else None)
    nll = code_map_nlls(prior, test_codes, batch_size)
    guidance = code_priors.resolve_guidance_scale(prior, None)
    how = f"class-conditional, sampled with guidance {guidance:g}" if conditional else "unconditional"
    description = (f"the default transformer prior ({config.n_layer} blocks of width {config.n_embd}), {how}, trained for {steps} steps of {GENERABILITY_BATCH_SIZE} code maps (AdamW, lr "
                   f"{GENERABILITY_LEARNING_RATE:g}, cosine) on the codes of {len(train_codes)} training images; "
                   f"{len(test_codes)} samples against as many test images")
    metrics = {"generability_bits_per_image": nll.mean().item() / math.log(2),
               "generability_prior": description}
    if features:
        generator = torch.Generator(device=vqvae.device).manual_seed(seed)
        samples = []
        with torch.no_grad():
            for start in range(0, len(test_codes), batch_size):
                n = min(batch_size, len(test_codes) - start)
                labels = {"class_labels": test_labels[start:start + n]} if conditional else {}
                samples.append(vqvae.sample(n, generator, prior=prior, **labels).float().clamp(0, 1).cpu())
        samples, real = torch.cat(samples), _images(test_set, collator, batch_size)
        for extractor in features:
            scores = feature_metrics(extractor.extract(real, batch_size), extractor.extract(samples, batch_size),
                                     seed=seed)
            metrics.update({f"generability_sample_{k}_{extractor.name}": scores[k]
                            for k in ("fd", "precision", "recall")})
    return metrics
