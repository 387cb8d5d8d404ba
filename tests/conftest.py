import gc
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
# accelerate collects garbage at the end of every Trainer.train (about 0.4 s each here): the imported modules need not
# be traversed again every time.
gc.freeze()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data():
    """Path of ../shared/data; the test is skipped where it is absent."""
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip("../shared/data/mnist is not present")
    return SHARED_DATA


_BLOCK_PACKAGE = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "hf_autoencoders":
            raise ImportError("hf_autoencoders must not be needed")
sys.meta_path.insert(0, Block())
"""


@pytest.fixture
def run_without_package():
    """run(code, workdir): run Python `code` in a fresh process that has transformers but cannot import
    hf_autoencoders, as someone who only has the saved folder would."""

    def run(code: str, workdir: Path) -> subprocess.CompletedProcess:
        env = {**os.environ, "HF_MODULES_CACHE": str(workdir / "modules"), "HF_HUB_OFFLINE": "1"}
        return subprocess.run([sys.executable, "-c", _BLOCK_PACKAGE + textwrap.dedent(code)], capture_output=True,
                              text=True, env=env, cwd=workdir, timeout=120)

    return run
