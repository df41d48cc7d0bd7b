"""Every implementation in the registry, forced, on representative configurations in every dimension.

Nothing here names an implementation: the parametrisation reads :data:`convscope.algorithms.ALGORITHMS`
and each module's own declarations (``DIMS``, ``PASSES``, ``needs``, ``ERROR``; see the docstring of
:mod:`convscope.algorithms`), so a module registered by anyone is tested by the same checks without a
list written for it.  For each (implementation, configuration, dtype):

* a configuration the implementation refuses (its ``needs``, or a dimension outside its ``DIMS``) has
  a refusal that is a clear sentence, and the public call with ``algorithm=`` raises a ValueError
  naming the implementation;
* otherwise each pass it declares (forward, grad_input, grad_weight, through ``conv{n}d`` and
  ``conv{n}d_backward`` with an ``output_mask`` asking for that gradient alone) equals torch's result and the reference loops' (float64
  tight, float32 scaled; a ``"global"`` implementation's error relative to the call's largest values).
"""
from __future__ import annotations

import functools
import re

import numpy as np
import pytest

import convscope
from convscope.algorithms import ALGORITHMS, PASSES, dims
from convscope.spec import bind, lift
from oracle import assert_close, assert_close_global, require_torch, torch_conv_nd

require_torch()

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")

# per number of spatial dimensions: (input (C, *spatial), weight shape, keyword arguments), batched N = 2;
# together they hold 1×1 and larger kernels, stride, dilation, 'same', groups (depthwise too) and every mode
CONFIGS = {
    1: [
        ((3, 10), (4, 3, 3), dict(padding=1)),
        ((4, 12), (6, 2, 3), dict(stride=2, padding=2, dilation=2, groups=2, padding_mode="circular")),
        ((4, 9), (4, 1, 3), dict(padding="same", groups=4, padding_mode="reflect")),
        ((3, 8), (5, 3, 1), dict(stride=2)),
        ((3, 12), (4, 3, 4), dict(stride=2, padding=1)),
    ],
    2: [
        ((3, 7, 8), (4, 3, 1, 1), {}),
        ((4, 8, 7), (6, 2, 1, 1), dict(stride=2, padding=1, groups=2, padding_mode="circular")),
        ((4, 8, 9), (4, 1, 3, 3), dict(padding=1, groups=4, padding_mode="reflect")),
        ((3, 9, 8), (6, 1, 3, 3), dict(stride=2, padding=1, groups=3)),
        ((5, 9, 10), (4, 5, 3, 3), dict(padding=1, padding_mode="replicate")),
        ((3, 10, 9), (4, 3, 3, 3), dict(padding="same")),
        ((4, 9, 10), (6, 2, 3, 5), dict(stride=(2, 1), padding=(1, 2), dilation=(2, 1), groups=2)),
        ((3, 11, 9), (4, 3, 5, 5), dict(stride=2, padding=2, padding_mode="circular")),
        ((4, 9, 8), (6, 2, 2, 2), dict(stride=2, groups=2)),
        ((3, 10, 9), (4, 3, 4, 4), dict(stride=2, padding=1, padding_mode="reflect")),
    ],
    3: [
        ((3, 5, 6, 5), (4, 3, 3, 3, 3), dict(padding=1)),
        ((4, 6, 5, 7), (4, 2, 2, 3, 1), dict(stride=(1, 2, 1), padding=(1, 0, 1), dilation=(2, 1, 1), groups=2,
                                             padding_mode="reflect")),
        ((4, 5, 5, 5), (4, 1, 3, 3, 3), dict(padding=1, groups=4, padding_mode="circular")),
        ((3, 4, 5, 6), (2, 3, 1, 1, 1), dict(stride=2, padding_mode="replicate")),
    ],
}
DTYPES = (np.float64, np.float32)
N = 2


def bound(nd, config):
    """The validated call of a configuration (shapes only), as the public functions bind it."""
    chw, w_shape, params = config
    return bind(nd, input_size=(N,) + chw, weight_size=w_shape, **params)


def refusal(name, call):
    """Why implementation ``name`` cannot compute ``call``, from its declarations (None: it can).

    A 1-d call runs as the 2-d call of height 1, so the 2-d declarations decide it."""
    if call.ndim == 1:
        call = lift(call)
    if call.ndim not in dims(name):
        return f"a number of spatial dimensions among its DIMS {dims(name)}, got {call.ndim}"
    return ALGORITHMS[name].needs(call.spec, call.shape)


def _grid():
    params = []
    for name in ALGORITHMS:
        for nd, configs in CONFIGS.items():
            for ci in range(len(configs)):
                for dtype in DTYPES:
                    params.append(pytest.param(name, nd, ci, dtype, id=f"{name}-{nd}d-{ci}-{np.dtype(dtype).name}"))
    return params


def test_every_module_declares_passes_it_defines():
    """``PASSES`` is a non-empty subset of the three passes, and the module defines each one it names."""
    for name, impl in ALGORITHMS.items():
        passes = impl.passes
        assert passes and set(passes) <= set(PASSES), (name, passes)
        assert impl.ERROR in ("local", "global"), name
        if "forward" in passes:
            assert callable(getattr(impl.module, "forward", None)), name
        for pass_ in ("grad_input", "grad_weight"):
            if pass_ in passes:
                assert callable(getattr(impl.module, "backward", None) or getattr(impl.module, pass_, None)), \
                    (name, pass_)


def test_every_module_serves_some_configurations():
    """Each implementation computes at least two of the configurations of a dimension it declares."""
    for name in ALGORITHMS:
        served = [c for nd in CONFIGS for c in CONFIGS[nd] if refusal(name, bound(nd, c)) is None]
        assert len(served) >= 2, name


@functools.lru_cache(maxsize=None)
def expected(nd, ci, dtype):
    """(x, w, b, g, params, torch's (out, dx, dw), the reference loops' (out, dx, dw)) of configuration
    ``ci`` of ``nd`` dimensions, computed once for every implementation (the tests never write into them)."""
    chw, w_shape, params = CONFIGS[nd][ci]
    rng = np.random.default_rng(nd * 10 + ci)
    x = rng.standard_normal((N,) + chw).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    g = rng.standard_normal(bound(nd, CONFIGS[nd][ci]).output_shape).astype(dtype)
    out, (dx, dw, _) = torch_conv_nd(x, w, b, g, **params)
    ref = getattr(convscope, f"conv{nd}d")(x, w, b, algorithm="reference", **params)
    ref_grads = getattr(convscope, f"conv{nd}d_backward")(g, x, w, algorithm="reference", **params)
    return x, w, b, g, dict(params), (out, dx, dw), (ref, ref_grads.input, ref_grads.weight)


def _compare(impl, got, want, factors, what):
    if impl.ERROR == "local":
        assert_close(got, want, what)
    else:       # error relative to the call's largest values: an exact 0 may carry the others' rounding
        assert_close_global(got, want, factors, what)


@pytest.mark.parametrize("name, nd, ci, dtype", _grid())
def test_registered_path_matches_torch_and_reference(name, nd, ci, dtype):
    impl = ALGORITHMS[name]
    why = refusal(name, bound(nd, CONFIGS[nd][ci]))
    x, w, b, g, params, torch_results, ref_results = expected(nd, ci, dtype)
    conv = getattr(convscope, f"conv{nd}d")
    if why is not None:
        assert isinstance(why, str) and len(why.split()) >= 2, (name, why)
        with pytest.raises(ValueError, match=re.escape(f"algorithm={name!r}")):
            conv(x, w, b, algorithm=name, **params)
        pytest.skip(f"{name} needs {why}")
    backward = getattr(convscope, f"conv{nd}d_backward")
    runs = {"forward": lambda: conv(x, w, b, algorithm=name, **params),
            "grad_input": lambda: backward(g, x, w, algorithm=name, output_mask=(True, False, False), **params).input,
            "grad_weight": lambda: backward(g, x, w, algorithm=name, output_mask=(False, True, False), **params).weight}
    factors = {"forward": (x, w), "grad_input": (g, w), "grad_weight": (g, x)}
    for pass_, want, ref in zip(PASSES, torch_results, ref_results):
        if pass_ in impl.passes:        # that pass alone, so a module serving only some passes runs only those
            got = runs[pass_]()
            _compare(impl, got, want, factors[pass_], f"{pass_} vs torch")
            _compare(impl, got, ref, factors[pass_], f"{pass_} vs reference")


def test_passes_default_to_all_three_and_follow_a_declaration():
    """A module without ``PASSES`` serves the three passes; one that declares fewer is run on those only."""
    import types

    from convscope.algorithms import Algorithm

    stub = types.ModuleType("forward_only")
    stub.forward, stub.ERROR, stub.PASSES = ALGORITHMS["reference"].module.forward, "local", ("forward",)
    assert Algorithm("forward_only", stub).passes == ("forward",)
    assert all(ALGORITHMS[name].passes == PASSES for name in ALGORITHMS if not hasattr(ALGORITHMS[name].module, "PASSES"))
