"""Winograd F(4×4, 3×3) in 3-d: the depth taps stacked into channels (:mod:`convscope.algorithms.ndstack`),
then one 2-d Winograd convolution (:mod:`convscope.algorithms.winograd`).

It serves kernels ``(k_D, 3, 3)`` with stride and dilation 1 across height and width and groups 1;
depth's kernel, stride, dilation and padding are any (the stacking takes them).  The 2-d passes run
through :func:`convscope.algorithms.run_forward` / :func:`~convscope.algorithms.run_backward`, which
compute a non-finite call on the exact local path.
"""
from __future__ import annotations

from . import ndstack, winograd

ERROR = "global"    # Winograd's: rounding error relative to a tile's largest values (see convscope.precision)
DIMS = (2, 3)       # the numbers of spatial dimensions it computes
PLANNED_DIMS = (3,)  # where it is chosen automatically; on a 2-d convolution it is the 2-d pass itself
INNER = "winograd"


def needs(spec, shape):
    """None where the stacked 2-d convolution suits Winograd (3×3 across height and width, stride 1,
    dilation 1, groups 1), else what is wrong."""
    problem = winograd.needs(*ndstack.stacked(spec, shape))
    if problem is None or spec.ndim == 2:
        return problem
    return problem.replace(", got", " across height and width, got", 1)


def forward(x, w, b, spec, shape):
    return ndstack.forward(x, w, b, spec, shape, INNER)


def grad_input(grad_out, w, spec, shape):
    return ndstack.grad_input(grad_out, w, spec, shape, INNER)


def grad_weight(grad_out, x, spec, shape):
    return ndstack.grad_weight(grad_out, x, spec, shape, INNER)


def workspace(pass_, spec, shape, itemsize) -> int:
    return ndstack.workspace(pass_, spec, shape, itemsize, INNER)


def describe(spec, shape, pass_) -> str:
    return ndstack.describe(spec, shape, pass_, INNER)
