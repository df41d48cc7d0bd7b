import os
import sys

import pytest
from hypothesis import settings

sys.path.insert(0, os.path.dirname(__file__))

from oracle import torch_num_threads  # noqa: E402

# CI gets the same examples on every run (its verdict must be reproducible); local runs explore.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread():
    """The tests' tensors are tiny: torch is faster on one thread, and leaves the other core free."""
    with torch_num_threads(1):
        yield
