"""The implementations of forward, grad-input and grad-weight, by name.

Each implementation is a module with three functions over validated,
batched arrays of one compute dtype:

* ``forward(x, w, b, spec, shape)``       → (N, C_out, H_out, W_out)
* ``grad_input(grad_out, w, spec, shape)`` → (N, C, H, W)
* ``grad_weight(grad_out, x, spec, shape)`` → (C_out, C/groups, kH, kW)

``spec`` is a :class:`convscope.spec.ConvSpec`, ``shape`` a :class:`convscope.spec.ConvShape`.
"""
from __future__ import annotations

from .. import reference
from . import gemm

ALGORITHMS = {
    "gemm": gemm,
    "reference": reference,
}
DEFAULT = "gemm"


def get(algorithm):
    """The implementation named ``algorithm`` (None: the default fast path)."""
    if algorithm is None:
        return ALGORITHMS[DEFAULT]
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        names = ", ".join(["None"] + [repr(n) for n in ALGORITHMS])
        raise ValueError(f"algorithm must be one of {names}, got {algorithm!r}")
    return ALGORITHMS[algorithm]
