"""Train an autoencoder (AE, VAE or VQ-VAE) on images with the transformers Trainer, as transformers' run_mae.py
trains a ViTMAE: the public calls of hf_autoencoders, in order. `hf-autoencoders train` takes the same steps
(`hf_autoencoders.training.run_training`), and train_ae.py, train_vae.py and train_vqvae.py are this script with their
--model_type.

    python examples/train_autoencoder.py --model_type vae --output_dir outputs/vae --do_train --do_eval  # digits
    python examples/train_vqvae.py --dataset_name ylecun/mnist --output_dir outputs/vqvae-mnist --do_train --do_eval
    accelerate launch examples/train_vqvae.py --dataset_name uoft-cs/cifar10 --output_dir outputs/vqvae-cifar --do_train

Every `TrainingArguments` flag works (--max_steps, --per_device_train_batch_size, --resume_from_checkpoint,
--push_to_hub, ...); `--help` lists them with the model and data flags. The folder it writes is a Hub repository:
the model and its code, the image processor, pictures and a model card.
"""

import sys

from hf_autoencoders.cli import run_main
from hf_autoencoders.training import parse_args


def main(argv: list[str] | None = None, model_type: str | None = None) -> dict:
    # 1. The flags, as dataclasses: which model (`ModelArguments`), which images (`DataArguments`) and how to train
    #    (`AutoencoderTrainingArguments`, transformers' `TrainingArguments` with defaults for autoencoders). `--help`
    #    is answered here, from a cache, before torch and transformers are imported.
    model_args, data_args, training_args = parse_args(argv, model_type=model_type)

    from transformers import set_seed

    from hf_autoencoders.data import ImageCollator, first_items
    from hf_autoencoders.hub import write_model_card
    from hf_autoencoders.models.image_processing_autoencoders import normalization
    from hf_autoencoders.training import (
        AutoencoderTrainer,
        build_model,
        check_request,
        clear_previous_run,
        fid_features,
        generability,
        load_training_data,
        measure_latent_scale,
        output_dir_lock,
        training_summary,
        write_pictures,
    )

    # 2. Check the request before anything is loaded: never write over a user's files, resume only from a complete
    #    checkpoint of this run and with its settings. Returns the checkpoint to resume from, if any.
    checkpoint = check_request(model_args, data_args, training_args)
    set_seed(training_args.seed)

    # 3. Own the output folder for the run's life: a second run into it, started meanwhile, is refused, naming this
    #    one (under torchrun or accelerate launch, the process that saves takes it for all).
    with output_dir_lock(training_args.output_dir, training_args):
        # 4. The images: a Hub id, a local folder or, without --dataset_name, the embedded digits. Small splits are
        #    decoded once into a memory-mapped cache, large ones per batch, and --streaming streams them.
        data = load_training_data(data_args, training_args)

        # 5. The model: a new one of --model_type shaped for the images (its config from the flags and
        #    --config_overrides), the one --model_name_or_path names (a diffusers AutoencoderKL folder is
        #    converted), or the one the checkpoint holds; with --train_decoder_only its encoder is frozen.
        model = build_model(model_args, data, checkpoint)

        # 6. With --overwrite_output_dir, clear the run the folder held (its checkpoints, model, card and results;
        #    other files stay) before training, so that the folder never mixes two runs and `latest` never resumes
        #    the old one.
        if data_args.overwrite_output_dir and checkpoint is None and training_args.should_save:
            clear_previous_run(training_args.output_dir)

        # 7. The image processor, saved beside the model so that it takes any image at inference, and the collator
        #    that turns the decoded images into batches of pixel_values, both in the model's pixel range ([0, 1], or
        #    [-1, 1] for the ldm backbone, as diffusers' pipelines expect).
        pixel_range = model.config.pixel_range
        processor = data.image_processor(do_binarize=data_args.binarize, **normalization(pixel_range))
        collator = ImageCollator(binarize=data_args.binarize,
                                 stochastic_binarization=data_args.stochastic_binarization, pixel_range=pixel_range)

        # 8. The Trainer, taught to log each loss term, to refuse a NaN step, to evaluate with the library's loop
        #    and, with --push_to_hub, to push checkpoints as --hub_strategy says; a few test images go to the
        #    trackers of --report_to at every evaluation. With the tokenizer recipe's flags it also trains a
        #    perceptual term, a discriminator beside the model and an EMA of the weights (which the model holds at
        #    the end, and saves).
        trainer = AutoencoderTrainer(
            model=model,
            args=training_args,
            data_collator=collator,
            train_dataset=data.train,
            eval_dataset=data.test,
            processing_class=processor,
            image_log_pixel_values=collator(first_items(data.test, 8))["pixel_values"],
        )

        # 9. Train, then save the model with its code and processor, the results and the trainer's state. (A
        #    finished run resumed from its last checkpoint trains nothing: it only writes what it had not written.)
        train_metrics, metrics = {}, {}
        if training_args.do_train:
            train_metrics = trainer.train(resume_from_checkpoint=checkpoint).metrics
            trainer.log_metrics("train", train_metrics)
            trainer.save_metrics("train", train_metrics)
            trainer.save_state()
        trainer.save_model()

        # 10. Evaluate once, on the test split: every loss term, MSE, PSNR, SSIM, codebook health, a VAE's bound on
        #     log p(x) from 64 importance samples and, unless --fid false, the Fréchet distance and its companions
        #     in the features of a small classifier of the labelled training images; with --generability, how well
        #     a VQ-VAE's codes can be generated. Without --do_eval nothing is evaluated.
        if training_args.do_eval:
            features = fid_features(data, training_args) if training_args.fid or training_args.generability else None
            metrics = trainer.evaluate(num_importance_samples=64, features=features if training_args.fid else None)
            if training_args.generability:
                metrics.update(generability(model, data.train, data.test, features=[features] if features else [],
                                            collator=collator, seed=training_args.seed))
            trainer.log_metrics("eval", metrics)
            trainer.save_metrics("eval", metrics)

        if trainer.is_world_process_zero():
            # 11. A latent map (the ldm backbone, or --latent_channels) is what a diffusion model trains on: its
            #     scaling and shift factors, 1 / std and mean of the latents of the whole training split, checked on
            #     the test split, go into config.json and the card.
            latent_scale = measure_latent_scale(model, data, model_args, training_args)

            # 12. Pictures (reconstructions, samples, loss curves, a VQ-VAE's codebook usage over the test set) and
            #     the model card, with the numbers of that evaluation and, with the tokenizer recipe
            #     (--perceptual_weight, --disc_weight, --use_ema), what it trained with.
            pictures = write_pictures(model, data.test, collator, training_args.output_dir,
                                      trainer.state.log_history, training_args.seed, trainer.code_histogram)
            training = training_summary(training_args, train_metrics) if training_args.do_train else None
            write_model_card(training_args.output_dir, model.config, data.name, metrics, pictures=pictures,
                             training=training, repo_id=training_args.hub_model_id, license=training_args.hub_license,
                             latent_scale=latent_scale,
                             recipe=trainer.recipe.description() if trainer.recipe else None)

            # 13. With --push_to_hub, upload the folder: the model, its code and processor, the card and the
            #     pictures (never the checkpoints' optimizer states).
            if trainer.hub_repo_id:
                print(f"pushed to {trainer.push_to_hub()}")
        return {**train_metrics, **metrics}

if __name__ == "__main__":
    run_main(main, sys.argv[1:])
