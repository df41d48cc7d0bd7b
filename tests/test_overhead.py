"""The caches that cut a call's fixed cost: the same results and errors as without them, a changed setting
planned anew, and repeated calls that skip the expensive steps (counted, never timed)."""
import re

import numpy as np
import pytest

import convscope
from convscope import algorithms, planner, spec, tuning
from convscope.algorithms import pointwise
from convscope.functional import _bias_grad
from convscope.spec import check_shapes, make_spec

X = np.ones((2, 3, 6, 6), np.float32)
W = np.ones((4, 3, 3, 3), np.float32)
WINO = ((8, 64, 28, 28), (64, 64, 3, 3))         # planned on Winograd under precision "high", gemm under "highest"


def _spec_shape(x_shape, w_shape, **params):
    s = make_spec(w_shape[2:], **params)
    return s, check_shapes(s, x_shape, w_shape)


# --------------------------------------------------------------------------- the same results and errors


def test_cached_spec_equals_the_uncached_one():
    args = ((3, 2), (2, 1), (1, 0), (1, 2), 1, "reflect", 2)
    assert make_spec(*args[:6], ndim=2) == spec._make_spec(*args)
    assert make_spec(3, padding="same") == spec._make_spec(3, 1, "same", 1, 1, "zeros", 2)
    assert make_spec([3, 3], [2, 2]) == make_spec((3, 3), (2, 2))


@pytest.mark.parametrize("good, bad, exc, pattern", [
    (dict(stride=1), dict(stride=True), TypeError, "stride must be an int or a pair of ints, got True (bool)"),
    (dict(stride=(1, 1)), dict(stride=(1, True)), TypeError, "stride must be an int or a pair of ints, got (1, True)"),
    (dict(dilation=2), dict(dilation=2.0), TypeError, "dilation must be an int or a pair of ints, got 2.0 (float)"),
    (dict(groups=1), dict(groups=np.True_), TypeError, "groups must be an int, got True (bool)"),
    (dict(padding=1), dict(padding=-1), ValueError, "padding must be non-negative, got (-1, -1)"),
])
def test_a_cached_good_value_does_not_let_an_equal_bad_one_through(good, bad, exc, pattern):
    """True == 1 and 2.0 == 2 hash alike: the cache must not answer them with the int's spec."""
    make_spec(3, **good)
    for _ in range(2):                                     # the same error on the second call too
        with pytest.raises(exc, match=re.escape(pattern)):
            make_spec(3, **bad)


def test_bad_call_raises_the_same_message_every_time():
    messages = set()
    for _ in range(3):
        with pytest.raises(ValueError) as info:
            convscope.conv2d(X, W, groups=3)
        messages.add(str(info.value))
    assert messages == {"out_channels (weight.shape[0]=4) must be divisible by groups (3)"}
    with pytest.raises(ValueError, match="input has 3 channels but weight expects 6"):
        convscope.conv2d(X, np.ones((4, 6, 3, 3), np.float32))
    convscope.conv2d(X, W)                                 # the good call, cached
    with pytest.raises(ValueError, match=re.escape("output would be empty")):
        convscope.conv2d(X[:, :, :2], W)                   # then a bad one of the same spec


def test_a_remembered_binding_checks_what_it_did_not_see():
    """bind answers a call from memory only when its arrays' shapes and dtypes and its arguments are those
    of a call it checked: the arrays are the new call's, and every other call is checked afresh."""
    gy = np.ones((2, 4, 4, 4), np.float32)
    first = spec.bind(2, grad_output=gy, input=X, weight=W, order=("grad_output", "input", "weight"))
    x2, w2 = X + 1, W * 2
    again = spec.bind(2, grad_output=gy, input=x2, weight=w2, order=("grad_output", "input", "weight"))
    assert again.input is x2 and again.weight is w2 and again.grad_output is gy and again.bias is None
    assert (again.spec, again.shape, again.dtype, again.batched) == (first.spec, first.shape, first.dtype, first.batched)
    with pytest.raises(ValueError, match="grad_output"):
        spec.bind(2, grad_output=np.ones((2, 4, 4, 5), np.float32), input=X, weight=W)
    with pytest.raises(TypeError, match="same dtype"):
        spec.bind(2, grad_output=gy, input=X, weight=W.astype(np.float64))
    convscope.conv2d(X, W, stride=1)
    for _ in range(2):
        with pytest.raises(TypeError, match=re.escape("stride must be an int or a pair of ints, got True (bool)")):
            convscope.conv2d(X, W, stride=True)
    assert convscope.conv2d(X, W, bias=np.ones(4, np.float32)).shape == (2, 4, 4, 4)
    with pytest.raises(ValueError, match="bias"):
        convscope.conv2d(X, W, bias=np.ones(5, np.float32))
    import torch
    assert np.array_equal(convscope.conv2d(torch.from_numpy(X), W), convscope.conv2d(X, W))


def test_a_callers_list_changed_after_a_call_does_not_change_the_cache():
    kernel, stride = [3, 3], [2, 1]
    first = make_spec(kernel, stride)
    kernel[0], stride[1] = 5, 3
    assert make_spec([3, 3], [2, 1]) == first and first.kernel_size == (3, 3) and first.stride == (2, 1)
    assert make_spec(kernel, stride).kernel_size == (5, 3) and make_spec(kernel, stride).stride == (2, 3)
    padding = [1, 2]
    y = convscope.conv2d(X, W, padding=padding)
    padding[1] = 0
    assert convscope.conv2d(X, W, padding=padding).shape == (2, 4, 6, 4) and y.shape == (2, 4, 6, 8)


def test_numpy_and_odd_ints_still_work_uncached():
    s = make_spec(np.int64(3), stride=np.array([2, 1]), padding=(np.int32(1), 0))
    assert s == make_spec(3, stride=(2, 1), padding=(1, 0))
    assert check_shapes(s, [2, 3, 6, 6], (4, 3, 3, 3)) == check_shapes(s, (2, 3, 6, 6), (4, 3, 3, 3))


def test_single_sample_bias_gradient_is_the_batched_sum():
    gy = np.random.default_rng(0).standard_normal((1, 5, 7, 3))
    general = (gy.reshape(1, 5, 21) @ np.ones(21)).sum(axis=0)
    assert np.array_equal(_bias_grad(gy), general)


# --------------------------------------------------------------------------- a changed setting plans anew


def test_precision_changes_the_plan():
    s, shape = _spec_shape(*WINO, padding=1)
    assert planner.decide(s, shape).forward.algorithm == "winograd"
    with convscope.conv_precision("highest"):
        assert planner.decide(s, shape).forward.algorithm == "gemm"
    previous = convscope.set_conv_precision("highest")
    try:
        assert planner.decide(s, shape).forward.algorithm == "gemm"
    finally:
        convscope.set_conv_precision(previous)
    assert planner.decide(s, shape).forward.algorithm == "winograd"


@pytest.fixture
def counted_decide(monkeypatch):
    """planner._decide counted; the remembered plans forgotten first."""
    planner.clear_cache()
    calls = []
    original = planner._decide
    monkeypatch.setattr(planner, "_decide", lambda *a: calls.append(a) or original(*a))
    yield calls
    planner.clear_cache()


def test_workspace_limit_and_threads_are_part_of_the_key(counted_decide):
    s, shape = _spec_shape(*WINO, padding=1)
    planner.decide(s, shape)
    planner.decide(s, shape)
    assert len(counted_decide) == 1
    with convscope.workspace_limit(1 << 20):
        planner.decide(s, shape)
    assert len(counted_decide) == 2
    with convscope.num_threads(convscope.get_num_threads() + 1):
        planner.decide(s, shape)
    assert len(counted_decide) == 3
    planner.decide(s, shape)
    assert len(counted_decide) == 3


def test_a_plan_that_depends_on_the_limit_follows_it(counted_decide, monkeypatch):
    """The table's conditions see the limit of the call's key."""
    seen = []
    monkeypatch.setattr(planner, "TABLE", (planner.Row("any", lambda sp, sh: seen.append(
        convscope.get_workspace_limit()) or True, ("gemm",) * 3, "test"),))
    s, shape = _spec_shape((1, 3, 8, 8), (2, 3, 3, 3))
    with convscope.workspace_limit(1 << 21):
        planner.decide(s, shape)
    with convscope.workspace_limit(1 << 22):
        planner.decide(s, shape)
    assert seen == [1 << 21, 1 << 22]


@pytest.fixture
def tuned(tmp_path, monkeypatch):
    """Tuning on, measurements faked (and counted), everything restored afterwards."""
    previous = convscope.set_tuning(True)
    tuning.clear()
    measured = []

    def fake(spec_, shape, dtype, names):
        measured.append(names)
        return {p: {"algorithm": "gemm", "ms": {n: 1.0 if n == "gemm" else 2.0 for n in names}}
                for p in planner.PASSES}

    monkeypatch.setattr(tuning, "_measure", fake)
    yield measured
    convscope.set_tuning(previous)
    tuning.clear()


def test_tuning_measures_on_first_sight_and_its_setting_is_seen(tuned):
    s, shape = _spec_shape(*WINO, padding=1)
    assert planner.decide(s, shape).forward.source == "measured" and len(tuned) == 1
    assert planner.decide(s, shape).forward.algorithm == "gemm" and len(tuned) == 1     # remembered
    tuning.clear()
    assert planner.decide(s, shape).forward.source == "measured" and len(tuned) == 2    # measured again
    convscope.set_tuning(False)
    assert planner.decide(s, shape).forward == planner.Choice(
        "winograd", planner.decide(s, shape).forward.reason, "table")
    convscope.set_tuning(True)
    assert planner.decide(s, shape).forward.source == "measured"


def test_plan_still_shows_the_layouts_calls_do_not_build_them(monkeypatch):
    p = convscope.plan((2, 3, 6, 6), (4, 3, 3, 3), padding=1)
    on_gemm = [choice.reason for choice in p if choice.algorithm == "gemm"]
    assert on_gemm and all("per sample" in reason or "batch folded" in reason for reason in on_gemm)
    monkeypatch.setattr(planner, "_layout", lambda *a: pytest.fail("a call built a layout text"))
    monkeypatch.setattr(planner, "choose", lambda *a, **k: pytest.fail("a call asked for the full plan"))
    convscope.conv2d(X, W, padding=1)
    convscope.conv2d_backward(np.ones((2, 4, 6, 6), np.float32), X, W, padding=1)


# --------------------------------------------------------------------------- repeated calls skip the work


def test_repeated_calls_do_not_rerun_the_expensive_steps(monkeypatch, counted_decide):
    counts = {"positive_tuple": 0, "_check_shapes": 0, "workspace": 0}
    for module, name in ((spec, "positive_tuple"), (pointwise, "workspace")):
        original = getattr(module, name)

        def counted(*a, _original=original, _name=name, **k):
            counts[_name] += 1
            return _original(*a, **k)
        monkeypatch.setattr(module, name, counted)
    spec._cached_spec.cache_clear()
    spec._cached_shapes.cache_clear()
    spec._BOUND.clear()
    x, w = np.ones((1, 5, 3, 3), np.float32), np.ones((7, 5, 1, 1), np.float32)
    gy = np.ones((1, 7, 3, 3), np.float32)
    convscope.conv2d(x, w, stride=1)
    convscope.conv2d_backward(gy, x, w, stride=1)
    first = dict(counts, decide=len(counted_decide), shapes=spec._cached_shapes.cache_info().misses)
    assert first["positive_tuple"] > 0 and first["workspace"] > 0 and first["decide"] == 1
    for _ in range(3):
        convscope.conv2d(x, w, stride=1)
        convscope.conv2d_backward(gy, x, w, stride=1)
    assert dict(counts, decide=len(counted_decide), shapes=spec._cached_shapes.cache_info().misses) == first


def test_memory_readings_are_reused_only_for_small_calls(monkeypatch):
    reads = []
    monkeypatch.setattr(spec, "available_memory", lambda: reads.append(1) or (64 << 30, "test bound"))
    monkeypatch.setattr(spec, "_reading", None)
    big = [("output", (1, 1, 8192, 8192), np.float32)]             # 256 MiB: above CHECK_MEMORY_FROM
    spec.check_memory(big)
    spec.check_memory(big)
    assert len(reads) == 1                                          # ≤ 1/16 of a fresh reading: reused
    huge = [("output", (1, 1, 65536, 32768), np.float32)]            # 8 GiB: more than 1/16 of it, read again
    spec.check_memory(huge)
    spec.check_memory(huge)
    assert len(reads) == 3
    spec.check_memory([("output", (1, 1, 1000, 1000), np.float32)])  # below CHECK_MEMORY_FROM: never read
    assert len(reads) == 3
    monkeypatch.setattr(spec, "READING_SECONDS", -1.0)               # an old reading is not reused
    spec.check_memory(big)
    assert len(reads) == 4


def test_a_new_bound_is_read_before_refusing(monkeypatch):
    """A reading cached while memory was plentiful never lets through a call that no longer fits."""
    monkeypatch.setattr(spec, "available_memory", lambda: (64 << 30, "plenty"))
    spec.check_memory([("output", (1, 1, 8192, 8192), np.float32)])
    monkeypatch.setattr(spec, "available_memory", lambda: (100 << 20, "left under RLIMIT_AS"))
    with pytest.raises(ValueError, match=r"output of shape \(1, 1, 8192, 8192\) \(float32\) needs 268435456 bytes"):
        spec.check_memory([("output", (1, 1, 8192, 8192), np.float32)])


def test_estimates_follow_the_limit_and_the_threads(monkeypatch):
    """A remembered estimate is keyed by the limit and the thread count its path may read."""
    seen = []
    monkeypatch.setattr(pointwise, "workspace", lambda pass_, sp, sh, itemsize: seen.append(
        (convscope.get_workspace_limit(), convscope.get_num_threads())) or 0)
    s, shape = _spec_shape((1, 3, 4, 4), (2, 3, 1, 1))
    impl = algorithms.ALGORITHMS["pointwise"]
    with convscope.workspace_limit(1 << 20):
        algorithms._estimate(impl, "forward", s, shape, 4)
        algorithms._estimate(impl, "forward", s, shape, 4)
    with convscope.workspace_limit(1 << 21), convscope.num_threads(3):
        algorithms._estimate(impl, "forward", s, shape, 4)
    assert seen == [(1 << 20, convscope.get_num_threads()), (1 << 21, 3)]
