"""The README's examples and the docstring examples run as written."""
import doctest
import importlib
import pathlib

import pytest
from oracle import require_torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODULES = ["convscope.functional", "convscope.module", "convscope.geometry", "convscope.explain.core",
           "convscope.explain.shape", "convscope.explore.data", "convscope.explore.server",
           "convscope.explore.notebook", "convscope.animate.core", "convscope.explain.transposed"]


def test_readme_examples():
    require_torch()  # the tour converts a layer to torch
    result = doctest.testfile(str(ROOT / "README.md"), module_relative=False,
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 20
    assert result.failed == 0


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
