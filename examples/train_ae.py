"""Train an AE on images, like transformers' run_mae.py.

    python examples/train_ae.py --output_dir outputs/ae --do_train --do_eval                      # embedded digits
    python examples/train_ae.py --dataset_name ylecun/mnist --output_dir outputs/ae-mnist --do_train --do_eval
    accelerate launch examples/train_ae.py --dataset_name uoft-cs/cifar10 --output_dir outputs/ae-cifar --do_train

Every `TrainingArguments` flag works (--max_steps, --per_device_train_batch_size, --resume_from_checkpoint, ...);
`--help` lists them with the model and data flags.
"""

import sys

from hf_autoencoders.cli import cmd_train, run_main

if __name__ == "__main__":
    run_main(cmd_train, ["--model_type", "ae", *sys.argv[1:]])
