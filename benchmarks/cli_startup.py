"""How fast every command and example answers `--help` (target: under 2 s), printed as JSON.

    python benchmarks/cli_startup.py [--repeats 5]

Each measurement is a fresh process (`python -c "from hf_autoencoders.cli import main; main()" CMD --help`, or
`python examples/X.py --help`), timed from start to exit; the median of `--repeats` runs is reported with the
machine's load average, since a busy machine slows every import.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["", "train", "train-prior", "evaluate", "sample", "push", "experiment"]
TARGET_SECONDS = 2.0


def seconds(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
        "seconds": {k: round(v, 3) for k, v in results.items()},
        "target_seconds": TARGET_SECONDS,
        "met": {k: v < TARGET_SECONDS for k, v in results.items() if "floor" not in k},
        "load_average": os.getloadavg(),
        "repeats": args.repeats,
    }, indent=2))


if __name__ == "__main__":
    main()
