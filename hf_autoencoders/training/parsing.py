"""Reading a command line, the same way for every command and example script: the library's `ArgumentParser`
(`arguments.py`: underscore or dash spellings, an error as one line), and `--help` read back from a file.

The training flags include transformers' `TrainingArguments`, whose import alone takes seconds, so the `--help` of
every command is rendered once for each version of this package's code, of transformers, of the program and of the
terminal width, kept in `<XDG_CACHE_HOME or ~/.cache>/hf_autoencoders/help`, and printed from there afterwards. This
module imports nothing heavy until it parses.

    model_args, data_args, training_args = parse_args(model_type="vqvae")     # sys.argv[1:]
"""

import importlib.metadata
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from ..results import fingerprint, write_text


def help_cache_file(name: str) -> Path:
    """Where the `--help` text of the command `name` is kept (see the module docstring)."""
    sources = [path.read_bytes() for path in sorted(Path(__file__).resolve().parents[1].rglob("*.py"))]
    key = fingerprint("help", name, Path(sys.argv[0]).name, importlib.metadata.version("transformers"),
                      shutil.get_terminal_size().columns, *sources)
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hf_autoencoders" / "help"
    return root / f"{name}-{key[:24]}.txt"


def parse_command(name: str, build_parser: Callable, args: list[str] | None = None):
    """Parse `args` (default: the command line) with the `ArgumentParser` that `build_parser()` returns: into its
    dataclasses when it has some, else into an `argparse.Namespace`. `--help` prints the text kept for `name` (see
    `help_cache_file`), rendering and keeping it the first time, and exits."""
    args = sys.argv[1:] if args is None else list(args)
    if any(arg in ("-h", "--help") for arg in args[:args.index("--") if "--" in args else None]):
        cached = help_cache_file(name)
        if cached.is_file():
            text = cached.read_text()
        else:
            text = build_parser().format_help()
            try:
                cached.parent.mkdir(parents=True, exist_ok=True)
                write_text(cached, text)
            except OSError as err:  # a read-only home: the help is rendered every time
                print(f"warning: the --help text could not be kept in {cached.parent} ({err}); it is rendered each "
                      "time (set XDG_CACHE_HOME to a writable folder)", file=sys.stderr)
        print(text, end="")
        raise SystemExit(0)
    parser = build_parser()
    if not parser.dataclass_types:
        return parser.parse_args(args)
    *parsed, unknown = parser.parse_args_into_dataclasses(args=args, return_remaining_strings=True)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")  # one line, with a suggestion
    return tuple(parsed)


def parse_args(args: list[str] | None = None, model_type: str | None = None):
    """A training run's flags (default: the command line) as (`ModelArguments`, `DataArguments`,
    `AutoencoderTrainingArguments`); --model_type defaults to `model_type` where it is given."""

    def build_parser():
        from .arguments import training_parser

        return training_parser(model_type)

    return parse_command(f"train-{model_type}" if model_type else "train", build_parser, args)


def parse_prior_args(args: list[str] | None = None):
    """A prior run's flags (default: the command line) as (`PriorArguments`, `AutoencoderTrainingArguments`)."""

    def build_parser():
        from .arguments import prior_parser

        return prior_parser()

    return parse_command("train-prior", build_parser, args)
