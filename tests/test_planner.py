"""convscope.plan and the planner's table; forced algorithms; conv2d_backward's output_mask."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

import convscope
from convscope import algorithms, planner
from oracle import assert_close


@pytest.mark.parametrize("x_shape, w_shape, params, expected", [
    ((8, 64, 56, 56), (256, 64, 1, 1), {}, ("pointwise",) * 3),
    ((8, 256, 56, 56), (512, 256, 1, 1), dict(stride=2), ("pointwise",) * 3),
    ((8, 32, 112, 112), (32, 1, 3, 3), dict(padding=1, groups=32), ("depthwise",) * 3),
    ((8, 96, 56, 56), (96, 1, 3, 3), dict(stride=2, padding=1, groups=96), ("depthwise",) * 3),
    ((8, 64, 56, 56), (64, 64, 3, 3), dict(padding=1), ("winograd", "winograd", "winograd")),
    ((8, 256, 14, 14), (256, 256, 3, 3), dict(padding=1, padding_mode="reflect"), ("winograd",) * 3),
    ((8, 512, 7, 7), (512, 512, 3, 3), dict(padding=1), ("gemm",) * 3),             # too few pixels
    ((8, 32, 56, 56), (32, 32, 3, 3), dict(padding=1), ("winograd",) * 3),
    ((8, 16, 56, 56), (16, 16, 3, 3), dict(padding=1), ("direct", "winograd", "winograd")),  # few channels: direct sums
    ((8, 8, 56, 56), (8, 8, 3, 3), dict(padding=1), ("direct", "gemm", "gemm")),   # too few for Winograd
    ((64, 1, 28, 28), (32, 1, 3, 3), dict(padding=1), ("gemm",) * 3),              # 9 taps × channels: gemm's
    ((8, 128, 56, 56), (128, 128, 3, 3), dict(stride=2, padding=1), ("gemm", "gather", "gemm")),
    ((8, 3, 224, 224), (64, 3, 7, 7), dict(stride=2, padding=3), ("direct", "gemm", "gemm")),   # the stem
    ((8, 3, 224, 224), (32, 3, 3, 3), dict(stride=2, padding=1), ("direct", "gemm", "gemm")),
    ((8, 64, 56, 56), (64, 32, 3, 3), dict(padding=1, groups=2), ("gemm",) * 3),
    ((8, 16, 64, 64), (16, 16, 15, 15), dict(padding=7), ("fft",) * 3),
    ((8, 128, 56, 56), (128, 1, 31, 31), dict(padding=15, groups=128), ("fft",) * 3),
    ((8, 3, 224, 224), (768, 3, 16, 16), dict(stride=16), ("patch",) * 3),             # patches
    ((8, 64, 64, 64), (128, 64, 2, 2), dict(stride=2), ("patch",) * 3),
    ((8, 64, 64, 64), (128, 64, 2, 2), dict(stride=2, padding=1), ("gemm", "gather", "gemm")),
    ((8, 32, 56, 56), (32, 1, 2, 2), dict(stride=2, groups=32), ("depthwise",) * 3),
    ((4, 512, 1, 199), (512, 512, 1, 2), dict(stride=(1, 2)), ("gemm",) * 3),        # 1-d patches: gemm's
])
def test_table(x_shape, w_shape, params, expected):
    p = convscope.plan(x_shape, w_shape, **params)
    assert (p.forward.algorithm, p.grad_input.algorithm, p.grad_weight.algorithm) == expected
    assert all(choice.reason.startswith("row ") for choice in p)
    assert "forward" in str(p) and expected[0] in str(p)


def test_plan_reports_the_fft_estimate():
    """Where FFT could serve, plan says what the cost models estimated, whichever won."""
    fft = convscope.plan((8, 64, 56, 56), (64, 64, 7, 7), padding=3)
    assert fft.forward.algorithm == "fft"
    assert re.search(r"row 'fft': .*; scipy\.fft, \d workers?, 64×64 grid; estimated [\d.]+ ms against "
                     r"gemm's [\d.]+ ms for the three passes$", fft.forward.reason)
    stem = convscope.plan((8, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3)
    assert re.search(r"; FFT estimated ([\d.]+) ms against gemm's ([\d.]+) ms", stem.grad_weight.reason)
    fft_ms, gemm_ms = planner.cost_ms(*_spec_shape((8, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3))
    assert fft_ms > 5 * gemm_ms


def _spec_shape(x_shape, w_shape, **params):
    from convscope.spec import check_shapes, make_spec

    spec = make_spec(w_shape[2:], params.get("stride", 1), params.get("padding", 0), 1, 1, "zeros")
    return spec, check_shapes(spec, x_shape, w_shape)


def test_non_overlapping_patches_plan_on_patch_also_transposed():
    """A kernel as large as its stride with no padding: every pass, and the transposed layer's (U-Net's
    2×2 stride-2 up-convolution), on the patches' 1×1 product; output_padding leaves rows no patch reads."""
    for params in (dict(stride=2), dict(stride=2, output_padding=1)):
        p = convscope.plan((8, 128, 32, 32), (128, 64, 2, 2), transposed=True, **params)
        assert [c.algorithm for c in p] == ["patch"] * 3
        assert "row 'patch'" in p.forward.reason and "2×2 patches as 256 channels" in p.forward.reason
    p = convscope.plan((8, 3, 224, 224), (768, 3, 16, 16), stride=16)
    assert "16×16 patches as 768 channels" in p.forward.reason


def test_plan_reports_gemm_layouts():
    stem = convscope.plan((8, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3)
    assert "4 stride phases" in stem.grad_weight.reason and "per sample" in stem.grad_weight.reason
    small = convscope.plan((8, 512, 14, 14), (512, 512, 3, 3), stride=2, padding=1)
    assert "batch folded (H_out·W_out = 49)" in small.forward.reason


def test_every_table_name_is_registered():
    assert set(planner.NAMES) == set(algorithms.ALGORITHMS)
    for row in planner.TABLE:
        assert set(row.choice) - {None} <= set(planner.NAMES)
        assert row.choice[0] is not None            # a row that holds decides the forward
    assert all(planner.TABLE[-1].choice)            # the last row decides every pass


def test_every_algorithm_declares_itself():
    """Each registered module says what it serves and how errors spread; no algorithm imports the planner."""
    import inspect

    for name, impl in algorithms.ALGORITHMS.items():
        assert impl.ERROR in ("local", "global"), name
        assert hasattr(impl.module, "forward") and (hasattr(impl.module, "backward") or (
            hasattr(impl.module, "grad_input") and hasattr(impl.module, "grad_weight"))), name
        assert "planner" not in inspect.getsource(impl.module).split('"""', 2)[-1], name
    assert {n for n, impl in algorithms.ALGORITHMS.items() if impl.ERROR == "global"} == {"winograd", "fft", "ndwinograd",
                                                                                             "subpixel"}


def test_grad_passes_derived_from_backward(monkeypatch):
    """grad_input and grad_weight of a path with ``backward`` go through it, with the one mask."""
    impl = algorithms.ALGORITHMS["gemm"]
    calls = []
    original = impl.module.backward
    monkeypatch.setattr(impl.module, "backward", lambda *a: calls.append(a[-1]) or original(*a))
    x, w = np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3))
    g = np.ones((1, 3, 3, 3))
    convscope.conv2d_input(x.shape, w, g, algorithm="gemm")
    convscope.conv2d_weight(x, w.shape, g, algorithm="gemm")
    assert calls == [(True, False), (False, True)]


def test_forced_algorithm():
    p = convscope.plan((2, 4, 8, 8), (4, 4, 3, 3), padding=1, algorithm="winograd")
    assert {c.algorithm for c in p} == {"winograd"} and all("forced" in c.reason for c in p)
    assert {c.source for c in p} == {"forced"}
    p = convscope.plan((2, 4, 8, 8), (4, 4, 3, 3), padding=1, algorithm="reference")
    assert {c.algorithm for c in p} == {"reference"}


X = np.zeros((1, 4, 6, 6))
W5 = np.zeros((2, 4, 5, 5))
W3 = np.zeros((2, 4, 3, 3))
G3 = np.zeros((1, 2, 4, 4))


@pytest.mark.parametrize("call, pattern", [
    (lambda: convscope.conv2d(X, W5, algorithm="winograd"),
     r"algorithm='winograd'.*3×3 kernel, stride 1, dilation 1 and groups 1, got kernel_size=\(5, 5\)"),
    (lambda: convscope.conv2d(X, W3, stride=2, dilation=2, algorithm="winograd"),
     r"algorithm='winograd'.*got stride=\(2, 2\), dilation=\(2, 2\)"),
    (lambda: convscope.conv2d(X, np.zeros((4, 2, 3, 3)), groups=2, algorithm="winograd"),
     r"algorithm='winograd'.*got groups=2"),
    (lambda: convscope.conv2d(X, W3, algorithm="pointwise"),
     r"algorithm='pointwise'.*1×1 kernel, got kernel_size=\(3, 3\)"),
    (lambda: convscope.conv2d(X, W3, algorithm="depthwise"),
     r"algorithm='depthwise'.*one input channel per group.*in_channels=4 and groups=1"),
    (lambda: convscope.conv2d_backward(G3, X, W3, algorithm="pointwise"), r"algorithm='pointwise'"),
    (lambda: convscope.conv2d_input(X.shape, W3, G3, algorithm="depthwise"), r"algorithm='depthwise'"),
    (lambda: convscope.conv2d_weight(X, W3.shape, G3, algorithm="pointwise"), r"algorithm='pointwise'"),
    (lambda: convscope.Conv2d(4, 2, 5)(X.astype(np.float32), algorithm="winograd"), r"algorithm='winograd'"),
    (lambda: convscope.plan(X.shape, W5.shape, algorithm="winograd"), r"algorithm='winograd'"),
    (lambda: convscope.plan(X.shape, W5.shape, algorithm="fast"), r"algorithm must be one of.*'fast'"),
])
def test_forced_algorithm_that_cannot_serve(call, pattern, monkeypatch):
    def nothing_may_run(*args):
        raise AssertionError("an implementation ran")

    monkeypatch.setattr(algorithms, "run_forward", nothing_may_run)
    monkeypatch.setattr(algorithms, "run_backward", nothing_may_run)
    with pytest.raises(ValueError, match=pattern):
        call()


def test_plan_validates_like_conv2d():
    with pytest.raises(ValueError, match=re.escape("input has 4 channels but weight expects 6")):
        convscope.plan((1, 4, 6, 6), (3, 2, 3, 3), groups=3)
    with pytest.raises(ValueError, match="output would be empty"):
        convscope.plan((1, 4, 2, 2), (3, 4, 3, 3))


# --------------------------------------------------------------------------- output_mask

MASKS = [(a, b, c) for a in (False, True) for b in (False, True) for c in (False, True)]


@pytest.mark.parametrize("mask", MASKS, ids=[str(m) for m in MASKS])
@pytest.mark.parametrize("x_shape, w_shape, params", [
    ((2, 4, 7, 6), (6, 4, 3, 3), dict(padding=1, padding_mode="reflect")),
    ((2, 4, 3, 3), (6, 2, 3, 3), dict(groups=2)),                                   # batch folded
    ((2, 4, 7, 6), (6, 4, 1, 1), dict(stride=2)),
    ((2, 4, 7, 6), (8, 1, 3, 3), dict(groups=4, padding=1)),
    ((2, 8, 32, 32), (8, 8, 15, 15), dict(padding=7)),
], ids=["gemm", "gemm-folded", "pointwise", "depthwise", "fft"])
def test_output_mask(mask, x_shape, w_shape, params, monkeypatch):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    g = rng.standard_normal(convscope.conv2d(x, w, **params).shape)
    full = convscope.conv2d_backward(g, x, w, **params)
    plan = convscope.plan(x_shape, w_shape, **params)
    impl = algorithms.ALGORITHMS[plan.grad_input.algorithm]
    calls = []
    original = impl.backward

    def spy(gy, xx, ww, spec, shape, want):
        calls.append(want)
        if not want[0]:
            assert ww is None
        if not want[1]:
            assert xx is None
        return original(gy, xx, ww, spec, shape, want)

    monkeypatch.setattr(impl, "backward", spy)
    got = convscope.conv2d_backward(g, x, w, output_mask=mask, **params)
    for asked, field in zip(mask, ("input", "weight", "bias")):
        if asked:
            assert_close(getattr(got, field), getattr(full, field), field)
        else:
            assert getattr(got, field) is None
    assert calls == ([(True, True)] if mask[:2] == (True, True) else [m for m in ((True, False), (False, True))
                                                                      if (m[0] and mask[0]) or (m[1] and mask[1])])


@pytest.mark.parametrize("mask, exc, pattern", [
    ((True, True), ValueError, r"output_mask must have 3 entries.*got 2"),
    (True, TypeError, r"output_mask must be a sequence of 3 bools.*True"),
    ((1, 0, 1), TypeError, r"output_mask must hold bools.*\(1, 0, 1\)"),
])
def test_output_mask_validation(mask, exc, pattern):
    with pytest.raises(exc, match=pattern):
        convscope.conv2d_backward(G3, X, W3, output_mask=mask)


@pytest.mark.parametrize("name", ["convscope.planner", "convscope.workspace", "convscope.threads",
                                  "convscope.tuning"])
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------- tuning


@pytest.fixture
def tuning(tmp_path, monkeypatch):
    """Tuning on with a file in tmp_path; restored (and forgotten) afterwards."""
    from convscope import tuning as module

    path = tmp_path / "tuning.json"
    previous = convscope.set_tuning(True, path=path)
    module.clear()
    yield module, path
    convscope.set_tuning(previous)
    module._state["path"] = None
    module.clear()


TINY = ((2, 4, 6, 6), (4, 4, 3, 3))


def test_tuning_is_off_by_default_and_plan_says_table():
    assert convscope.get_tuning() is False
    p = convscope.plan(*TINY, padding=1)
    assert {c.source for c in p} == {"table"} and "[table]" in str(p)


def test_tuning_measures_once_and_remembers(tuning, monkeypatch):
    module, path = tuning
    timed = []
    original = module._best_ms
    monkeypatch.setattr(module, "_best_ms", lambda run: timed.append(run) or original(run))
    p = convscope.plan(*TINY, padding=1)
    candidates = planner.candidates(*_spec_shape(*TINY, padding=1))
    assert set(candidates) == {"gemm", "winograd", "fft", "gather", "direct"}
    assert len(timed) == 3 * len(candidates)
    for pass_ in planner.PASSES:
        choice = getattr(p, pass_)
        assert choice.source == "measured" and choice.algorithm in candidates
        assert all(f"{name} " in choice.reason for name in candidates)
    assert "[measured]" in str(p)
    convscope.plan(*TINY, padding=1)                                   # remembered: nothing timed again
    assert len(timed) == 3 * len(candidates)
    # the call runs the measured winners and still computes the convolution
    x, w = np.random.default_rng(0).standard_normal(TINY[0]), np.random.default_rng(1).standard_normal(TINY[1])
    assert_close(convscope.conv2d(x, w, padding=1), convscope.conv2d(x, w, padding=1, algorithm="reference"))
    # the file: JSON, this machine's key, one entry per configuration
    data = json.loads(path.read_text())
    assert data["format"] == "convscope-tuning"
    (machine, entries), = data["machines"].items()
    assert machine == module.machine() and "numpy" in machine and "convscope" in machine
    assert any(entry["forward"]["algorithm"] == p.forward.algorithm for entry in entries.values())


def test_tuning_reads_the_file_in_a_new_process(tuning):
    import subprocess
    import sys

    module, path = tuning
    key = module.key(*_spec_shape(*TINY, padding=1), np.float32)
    entry = {p: {"algorithm": "fft", "ms": {"fft": 1.0, "gemm": 2.0, "winograd": 3.0}} for p in planner.PASSES}
    path.write_text(json.dumps({"format": "convscope-tuning", "machines": {module.machine(): {key: entry}}}))
    code = ("import convscope; p = convscope.plan((2, 4, 6, 6), (4, 4, 3, 3), padding=1); "
            "print(p.forward.algorithm, p.forward.source)")
    env = dict(os.environ, CONVSCOPE_TUNING="1", CONVSCOPE_TUNING_FILE=str(path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["fft", "measured"]


def test_tuning_ignores_other_machines_entries(tuning, monkeypatch):
    module, path = tuning
    key = module.key(*_spec_shape(*TINY, padding=1), np.float32)
    entry = {p: {"algorithm": "fft", "ms": {"fft": 1.0}} for p in planner.PASSES}
    path.write_text(json.dumps({"format": "convscope-tuning", "machines": {"another machine": {key: entry}}}))
    module.clear()
    monkeypatch.setattr(module, "_measure", lambda spec, shape, dtype, names: {
        p: {"algorithm": "gemm", "ms": {n: 1.0 if n == "gemm" else 2.0 for n in names}} for p in planner.PASSES})
    assert convscope.plan(*TINY, padding=1).forward.algorithm == "gemm"
    data = json.loads(path.read_text())
    assert set(data["machines"]) == {"another machine", module.machine()}
    assert data["machines"]["another machine"][key] == entry            # kept as it was


def test_tuning_measures_a_configuration_once_across_threads(tuning, monkeypatch):
    import threading

    module, _ = tuning
    calls = []

    def fake_measure(spec, shape, dtype, names):
        calls.append(1)
        return {p: {"algorithm": names[0], "ms": {n: 1.0 for n in names}} for p in planner.PASSES}

    monkeypatch.setattr(module, "_measure", fake_measure)
    results = []
    threads = [threading.Thread(target=lambda: results.append(convscope.plan((1, 3, 5, 5), (2, 3, 3, 3))))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 8
    assert len({tuple(c.algorithm for c in r) for r in results}) == 1


def test_tuning_per_dtype_and_forced_algorithms_untimed(tuning, monkeypatch):
    module, _ = tuning
    seen = []
    monkeypatch.setattr(module, "_measure", lambda spec, shape, dtype, names: seen.append(dtype) or {
        p: {"algorithm": "gemm", "ms": {"gemm": 1.0}} for p in planner.PASSES})
    spec, shape = _spec_shape(*TINY, padding=1)
    planner.choose(spec, shape, dtype=np.float64)
    planner.choose(spec, shape, dtype=np.float32)
    planner.choose(spec, shape, algorithm="winograd")
    assert seen == [np.float64, np.float32]


def test_environment_variable_turns_tuning_on():
    import subprocess
    import sys

    code = "import convscope; print(convscope.get_tuning())"
    for value, expected in (("1", "True"), ("0", "False"), ("", "False")):
        env = dict(os.environ, CONVSCOPE_TUNING=value)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == expected


@pytest.mark.parametrize("args, exc, pattern", [
    (("yes",), TypeError, r"set_tuning: enabled must be True or False, got 'yes'"),
    ((True, 3), TypeError, r"set_tuning: path must be a str, a path-like or None, got int"),
])
def test_set_tuning_validation(args, exc, pattern):
    with pytest.raises(exc, match=pattern):
        convscope.set_tuning(*args)
    assert convscope.get_tuning() is False


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"format": "pickle"}'])
def test_set_tuning_rejects_a_file_that_is_not_a_tuning_file(tmp_path, text):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match="tuning file .*bad.json"):
        convscope.set_tuning(True, path=path)
    assert convscope.get_tuning() is False and path.read_text() == text
