"""Latent diffusion on an hf_autoencoders VAE: export it to diffusers, train a small DiT on its latents, and run,
save and reload diffusers' `DiTPipeline` with it.

    python examples/train_vae.py --dataset_name ../shared/data/cifar10 --latent_channels 4 \
        --block_out_channels 32 64 64 --layers_per_block 1 --output_dir outputs/vae-cifar --do_train --do_eval
    python examples/latent_diffusion.py --vae outputs/vae-cifar --dataset_name ../shared/data/cifar10 \
        --output_dir outputs/dit-cifar --max_steps 20000

The VAE's run measured its `scaling_factor` at the end of training (or run `hf-autoencoders scaling-factor`); without
one, this script measures it first. What it writes into --output_dir:

    vae/           the VAE as a diffusers AutoencoderKL folder (`AutoencoderKL.from_pretrained` loads it)
    pipeline/      a DiTPipeline folder: transformer, vae, scheduler, with the dataset's class names
    samples.png    one sample of each class, from the reloaded pipeline

The DiT learns to denoise scaling_factor * z, z ~ q(z|x) of the training images, as diffusers' DiT does:
`DiTPipeline` decodes latents / scaling_factor (it applies no shift_factor), and CIFAR-sized latents need a model
of only a few blocks. Needs diffusers (pip install 'hf-autoencoders[diffusers]').
"""

from __future__ import annotations

import sys
from pathlib import Path

from hf_autoencoders.cli import run_main
from hf_autoencoders.training import ArgumentParser


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vae", required=True, help="A trained hf_autoencoders VAE (run folder or Hub id).")
    parser.add_argument("--dataset_name", default=None, help="Its training images (default: the embedded digits).")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--max_steps", type=int, default=20000, help="Training steps of the DiT.")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=3e-4)
    parser.add_argument("--num_layers", type=int, default=6, help="DiT blocks.")
    parser.add_argument("--num_attention_heads", type=int, default=4)
    parser.add_argument("--attention_head_dim", type=int, default=32)
    parser.add_argument("--patch_size", type=int, default=2, help="Latent positions per DiT token side.")
    parser.add_argument("--num_inference_steps", type=int, default=50)
    parser.add_argument("--guidance_scale", type=float, default=4.0)
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if Path(args.output_dir).exists() and any(Path(args.output_dir).iterdir()):
        parser.error(f"--output_dir {args.output_dir} already holds files; choose a new folder.")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)

    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, DiTPipeline, DiTTransformer2DModel
    from tqdm.auto import tqdm
    from transformers import AutoModel

    from hf_autoencoders.data import load_image_dataset
    from hf_autoencoders.diffusers_compat import export_to_diffusers
    from hf_autoencoders.evaluation import scaling_factors
    from hf_autoencoders.plots import plot_samples

    torch.manual_seed(args.seed)
    output_dir = Path(args.output_dir)

    # 1. Our VAE and the images it was trained on, at its size.
    vae = AutoModel.from_pretrained(args.vae, trust_remote_code=True).eval()
    data = load_image_dataset(args.dataset_name, image_size=vae.config.image_size,
                              num_channels=vae.config.num_channels, max_samples={"train": args.max_train_samples},
                              progress=False)
    if data.train.labels is None:
        raise SystemExit("error: DiTPipeline generates by class; the dataset needs labels.")

    # 2. Its scaling factor (the posterior samples' 1 / std over the training images), measured if the run did not.
    if vae.config.scaling_factor is None:
        factors = scaling_factors(vae, data.train, data.test)
        vae.config.scaling_factor, vae.config.shift_factor = factors["scaling_factor"], factors["shift_factor"]
        print(f"scaling_factor {factors['scaling_factor']:.4f} (scaled test std {factors['scaled_test_std']:.3f})")

    # 3. The VAE as a diffusers AutoencoderKL, the form every pipeline takes.
    export_to_diffusers(vae, output_dir / "vae")
    diffusers_vae = AutoencoderKL.from_pretrained(output_dir / "vae").eval()

    # 4. The training latents, scaling_factor * z with z ~ q(z|x), through diffusers' own VAE (images in [-1, 1]).
    generator = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        latents = torch.cat([
            diffusers_vae.encode(images.float() / 127.5 - 1).latent_dist.sample(generator)
            for images in tqdm(data.train.images.split(256), desc="encoding")
        ]) * diffusers_vae.config.scaling_factor
    labels = data.train.labels.long()

    # 5. A small DiT over the latent map, with diffusers' class embedding (1000 classes: DiTPipeline's null class for
    #    classifier-free guidance is 1000; 10% of the labels are dropped to it while training).
    _, channels, size, _ = latents.shape
    transformer = DiTTransformer2DModel(
        num_attention_heads=args.num_attention_heads, attention_head_dim=args.attention_head_dim,
        in_channels=channels, out_channels=channels, num_layers=args.num_layers, sample_size=size,
        patch_size=args.patch_size, num_embeds_ada_norm=1000,
    )
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000)
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=args.learning_rate, weight_decay=0.0)

    # 6. Train it to predict the noise of x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps (DDPM, Ho et al., 2020).
    transformer.train()
    losses = []
    for _ in tqdm(range(args.max_steps), desc="training the DiT"):
        index = torch.randint(len(latents), (args.batch_size,), generator=generator)
        clean, classes = latents[index], labels[index]
        noise = torch.randn(clean.shape, generator=generator)
        timesteps = torch.randint(noise_scheduler.config.num_train_timesteps, (len(clean),), generator=generator)
        noisy = noise_scheduler.add_noise(clean, noise, timesteps)
        prediction = transformer(noisy, timestep=timesteps, class_labels=classes).sample
        loss = torch.nn.functional.mse_loss(prediction, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    transformer.eval()

    # 7. The pipeline: our VAE, the DiT and a DDIM sampler; saved, reloaded, and sampled one image per class.
    names = data.label_names or [str(k) for k in range(int(labels.max()) + 1)]
    pipeline = DiTPipeline(transformer=transformer, vae=diffusers_vae,
                           scheduler=DDIMScheduler.from_config(noise_scheduler.config),
                           id2label={k: name for k, name in enumerate(names)})
    pipeline.save_pretrained(output_dir / "pipeline")
    pipeline = DiTPipeline.from_pretrained(output_dir / "pipeline")
    images = pipeline(class_labels=list(range(len(names))), guidance_scale=args.guidance_scale,
                      num_inference_steps=args.num_inference_steps, generator=torch.Generator().manual_seed(args.seed),
                      output_type="pt").images
    plot_samples(images, output_dir / "samples.png", nrow=len(names))
    print(f"wrote {output_dir / 'pipeline'} and {output_dir / 'samples.png'}")
    return {"losses": losses, "images": images, "pipeline": str(output_dir / "pipeline")}


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
