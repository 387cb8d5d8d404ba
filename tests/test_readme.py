"""The README starts with the two fresh-clone commands, and CI runs exactly the second one."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_commands_and_ci_agree():
    blocks = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)
    main_job, tests = blocks[0].strip(), blocks[1].strip()
    assert "\n" not in main_job and "\n" not in tests
    assert "examples/quickstart.py" in main_job and "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines()
    assert ci.index("torch==2.13.0") < ci.index('-e ".[test')
