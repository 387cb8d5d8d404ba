"""How fast every command and example answers `--help` (target: under 2 s), printed as JSON.

    python benchmarks/cli_startup.py [--repeats 5]

Each measurement is a fresh process (`python -c "from hf_autoencoders.cli import main; main()" CMD --help`, or
`python examples/X.py --help`), timed from start to exit, with an empty cache of help texts at the start. `first` is
the first call; `seconds` is the median of the next `--repeats` calls: the training commands render their help once
(their flags come from transformers' TrainingArguments, whose import is the floor measured last) and read it back
from the cache afterwards (`training.parsing.help_cache_file`). The machine's load average is reported with the figures, since a
busy machine slows every import.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["", "train", "train-prior", "evaluate", "sample", "push", "experiment"]
TARGET_SECONDS = 2.0


CACHE = tempfile.mkdtemp()  # the help texts of this run only


def seconds(command: list[str], repeats: int) -> tuple[float, float]:
    """The seconds of a first call, and the median of `repeats` calls after it."""
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True, cwd=ROOT,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": CACHE})
        times.append(time.perf_counter() - start)
    return times[0], statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cli = [sys.executable, "-c", "from hf_autoencoders.cli import main; main()"]
    results = {f"hf-autoencoders {c}".strip() + " --help": seconds([*cli, *([c] if c else []), "--help"], args.repeats)
               for c in COMMANDS}
    for example in sorted((ROOT / "examples").glob("*.py")):
        results[f"examples/{example.name} --help"] = seconds([sys.executable, str(example), "--help"], args.repeats)
    results["python -c 'import torch' (floor)"] = seconds([sys.executable, "-c", "import torch"], args.repeats)
    # The training commands' flags include transformers' TrainingArguments: their --help cannot import less than this.
    results["python -c 'from transformers import TrainingArguments' (floor)"] = seconds(
        [sys.executable, "-c", "from transformers import TrainingArguments"], args.repeats)
    print(json.dumps({
        "seconds": {k: round(warm, 3) for k, (first, warm) in results.items()},
        "first_call_seconds": {k: round(first, 3) for k, (first, warm) in results.items()},
        "target_seconds": TARGET_SECONDS,
        "met": {k: warm < TARGET_SECONDS for k, (first, warm) in results.items() if "floor" not in k},
        "load_average": os.getloadavg(),
        "repeats": args.repeats,
    }, indent=2))


if __name__ == "__main__":
    main()
