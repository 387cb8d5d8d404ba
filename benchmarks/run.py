"""Benchmarks of hf_autoencoders: framework overhead, speed and quality against pythae, compute utilisation, memory,
data-pipeline waits, quality per CPU budget, speed-ups, the nearest-code search and a GPU section, each in its own
file (`SECTIONS` in `_common.py`) and runnable alone. This driver runs the sections named by --only (default: all)
in one process and prints ONE JSON object: each section's result and the headline figures.

    python benchmarks/run.py --quick             # small models, few steps
    python benchmarks/run.py                     # everything (hours on a CPU)
    python benchmarks/run.py --smoke             # seconds; for the test suite
    python benchmarks/run.py --only overhead,mfu # some sections only
    python benchmarks/overhead.py --quick        # one section alone (the same JSON)

See benchmarks/README.md for what each figure means and the latest results.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

from _common import ALIASES, SECTIONS, measure, mode_parser
from readme_table import markdown_table


def main(argv=None) -> dict | str:
    parser = mode_parser(__doc__)
    parser.add_argument("--only", default=None,
                        help=f"Comma-separated sections: {', '.join(SECTIONS)} (aliases: "
                             + ", ".join(f"{alias} = {name}" for alias, name in ALIASES.items()) + ").")
    parser.add_argument("--budget", type=float, default=None, help="Override the quality budget (seconds/model).")
    parser.add_argument("--compile", action="store_true", help="Measure torch.compile in --quick mode too.")
    parser.add_argument("--output", default=None, help="Also write the JSON here.")
    parser.add_argument("--table", default=None, help="Print the README table of a saved JSON result and exit.")
    args = parser.parse_args(argv)
    if args.table:
        return markdown_table(json.loads(Path(args.table).read_text()))
    sections = list(SECTIONS)
    if args.only:
        sections = [ALIASES.get(name, name) for name in args.only.split(",")]
        unknown = [name for name in sections if name not in SECTIONS]
        if unknown:
            parser.error(f"--only: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    overrides = {} if args.budget is None else {"budget_s": args.budget}
    result = measure(args, sections, argv, **overrides)
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    real_stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs; stdout carries only the JSON
        output = main()
    print(output if isinstance(output, str) else json.dumps(output, indent=1), file=real_stdout)
