import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data():
    """Path of ../shared/data; the test is skipped where it is absent."""
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip("../shared/data/mnist is not present")
    return SHARED_DATA
