#!/usr/bin/env python
"""Time convscope's fast paths against ``torch.nn.functional.conv2d`` on ResNet-50's and MobileNetV2's conv layers.

Usage::

    python bench/bench_conv.py                       # all 53 layers and 5 large kernels, about 13 minutes
    python bench/bench_conv.py --quick               # 11 representative layers, about 2 minutes
    python bench/bench_conv.py --repeat 21 --markdown bench/results.md
    python bench/bench_conv.py --layers lk.15x15 lk.31x31 lk.15x15.n8 lk.7x7 lk.dw31   # the large kernels

Both libraries run in the same process, in float32, on the same arrays (the
torch tensors share memory with the NumPy arrays).  For every layer and pass
the two are sampled alternately (torch, convscope, torch, convscope, ...),
each sample after untimed warm-up calls (see Thread pools), and the median of
the samples is reported.

convscope runs with ``algorithm=None``: its planner picks an implementation per
pass (the ``algorithm`` column shows the choice, from ``convscope.plan``).

Passes
------
forward           ``conv2d(x, w, b)``
forward+backward  the forward, then all three gradients: torch through autograd
                  (``requires_grad`` on input, weight and bias, ``out.backward(grad)``),
                  convscope through ``conv2d`` then ``conv2d_backward``.

Effective GFLOP/s use the direct-convolution count
``2·N·C_out·H_out·W_out·(C_in/groups)·kH·kW`` for the forward and three times that
for forward+backward, whatever the algorithm really does.

Thread pools
------------
torch runs on as many threads as the process may use cores; NumPy's BLAS
keeps its default thread count.  Two thread pools in one process get in each
other's way: after every call OpenBLAS's idle workers busy-wait for about 2^28
cycles (~0.1 s) and hold the cores that torch's OpenMP team then waits for,
which makes a torch call right after a NumPy one several times slower.  A
pause does not help either: waking a pool that has gone to sleep costs
milliseconds on this kind of (virtual) machine.  So every timed sample is
preceded by ``--handover`` seconds (default 0.2) of untimed calls of the same
library, which lets the other library's workers go idle and keeps this one's
awake; each library is then timed as it runs when called back to back.

Memory allocator
----------------
Both libraries get large buffers from the C allocator.  glibc serves blocks
above its mmap threshold with fresh pages from the kernel and gives back freed
memory above its trim threshold, so a call can pay page faults (and the zeroing
of every page) for its buffers.  The thresholds start low and move with the
process's history, which makes timings depend on what ran before: torch's 7×7
stem forward took 17 ms in a fresh process and 5 ms after other layers, and
torch's forward+backward of a 1×1 256→64 layer 13 ms or 31 ms.  Unless told
otherwise (``--malloc``), the script raises both thresholds to 1 GiB before
timing anything, so freed memory is kept and reused and neither library pays
page faults in steady state, as with a caching allocator.  ``--malloc
glibc-steady`` uses the values glibc itself settles at in a long-running
process (mmap 32 MiB, trim 64 MiB), ``--malloc default`` leaves glibc alone.

Other processes
---------------
Before each layer the script waits (``--wait-idle``) for the CPU to be idle,
measures the CPU time other processes used while the layer was timed, times
the layer again (``--retries``) if that exceeded 5 %, and marks the row with
a † if it still did.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import math
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

import convscope

BATCH = 8
DTYPE = np.float32

FWD_TARGET = 0.9          # geomean convscope/torch, forward
FWD_BWD_TARGET = 0.8      # geomean convscope/torch, forward+backward
WORST_TARGET = 2.0        # no layer's ratio above this
WINOGRAD_GEMM_TARGET = 1.3   # 3×3 stride-1 layers with ≥ 64 channels: forward GF/s ≥ this × NumPy's GEMM GF/s
ACCURACY_TARGET = 1e-4    # max |convscope − torch| / max |torch|, every layer and pass

LOAD_FLAG = 0.05   # rows where other processes used more than this share of the CPU get a †


# --------------------------------------------------------------------------- layers


@dataclass(frozen=True)
class Layer:
    """One convolution: input (N, C_in, H, W), weight (C_out, C_in/groups, kH, kW)."""

    name: str
    N: int
    C_in: int
    H: int
    W: int
    C_out: int
    kH: int
    kW: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    count: int = 1          # how many convolutions of its network have this shape
    net: str = "ResNet-50"  # "ResNet-50", "MobileNetV2", "seed" or "large kernel"

    @property
    def resnet(self) -> bool:
        return self.net == "ResNet-50"

    @property
    def H_out(self) -> int:
        return (self.H + 2 * self.padding - self.kH) // self.stride + 1

    @property
    def W_out(self) -> int:
        return (self.W + 2 * self.padding - self.kW) // self.stride + 1

    @property
    def forward_flops(self) -> int:
        return (2 * self.N * self.C_out * self.H_out * self.W_out
                * (self.C_in // self.groups) * self.kH * self.kW)

    def describe(self) -> str:
        pad = f" p{self.padding}" if self.padding else ""
        grp = "" if self.groups == 1 else " dw" if self.groups == self.C_in == self.C_out else f" g{self.groups}"
        return (f"{self.kH}×{self.kW}/{self.stride}{pad}{grp} {self.C_in}→{self.C_out} "
                f"{self.H}×{self.W}→{self.H_out}×{self.W_out} N={self.N}")


def _rn(name, c_in, hw, c_out, k, stride, count):
    return Layer(name, BATCH, c_in, hw, hw, c_out, k, k, stride, k // 2, count=count)


# torchvision's resnet50 (v1.5: the stride sits on the 3×3 conv of a bottleneck)
# at 224×224.  One entry per distinct shape; ``count`` is how often it occurs
# among the network's 53 convolutions.  layer1's downsample (1×1/1 64→256 at
# 56×56) has the shape of layer1.0.conv3 and is counted there.
RESNET50 = [
    _rn("conv1", 3, 224, 64, 7, 2, 1),
    _rn("layer1.0.conv1", 64, 56, 64, 1, 1, 1),
    _rn("layer1.0.conv2", 64, 56, 64, 3, 1, 3),
    _rn("layer1.0.conv3", 64, 56, 256, 1, 1, 4),
    _rn("layer1.1.conv1", 256, 56, 64, 1, 1, 2),
    _rn("layer2.0.conv1", 256, 56, 128, 1, 1, 1),
    _rn("layer2.0.conv2", 128, 56, 128, 3, 2, 1),
    _rn("layer2.0.conv3", 128, 28, 512, 1, 1, 4),
    _rn("layer2.0.downsample", 256, 56, 512, 1, 2, 1),
    _rn("layer2.1.conv1", 512, 28, 128, 1, 1, 3),
    _rn("layer2.1.conv2", 128, 28, 128, 3, 1, 3),
    _rn("layer3.0.conv1", 512, 28, 256, 1, 1, 1),
    _rn("layer3.0.conv2", 256, 28, 256, 3, 2, 1),
    _rn("layer3.0.conv3", 256, 14, 1024, 1, 1, 6),
    _rn("layer3.0.downsample", 512, 28, 1024, 1, 2, 1),
    _rn("layer3.1.conv1", 1024, 14, 256, 1, 1, 5),
    _rn("layer3.1.conv2", 256, 14, 256, 3, 1, 5),
    _rn("layer4.0.conv1", 1024, 14, 512, 1, 1, 1),
    _rn("layer4.0.conv2", 512, 14, 512, 3, 2, 1),
    _rn("layer4.0.conv3", 512, 7, 2048, 1, 1, 3),
    _rn("layer4.0.downsample", 1024, 14, 2048, 1, 2, 1),
    _rn("layer4.1.conv1", 2048, 7, 512, 1, 1, 2),
    _rn("layer4.1.conv2", 512, 7, 512, 3, 1, 2),
]
assert sum(layer.count for layer in RESNET50) == 53

SEED_004 = Layer("seed 004", 14, 4, 32, 35, 5, 3, 2, stride=2, padding=0, net="seed")


def _dw(name, c, hw, stride, count):
    return Layer(name, BATCH, c, hw, hw, c, 3, 3, stride, 1, groups=c, count=count, net="MobileNetV2")


def _pw(name, c_in, hw, c_out, count):
    return Layer(name, BATCH, c_in, hw, hw, c_out, 1, 1, count=count, net="MobileNetV2")


# torchvision's mobilenet_v2 at 224×224: every distinct depthwise 3×3 and pointwise 1×1
# convolution of the inverted-residual blocks (features.1–17) and the last 1×1 (features.18);
# ``count`` is how often each shape occurs among those 51 convolutions.  Names are the first
# module with the shape: features.B.conv.0.0 expands (1×1), .1.0 is the depthwise 3×3
# (.0.0 in block 1, which has no expansion), the last conv projects (1×1).
MOBILENETV2 = [
    _dw("mb.features.1.dw", 32, 112, 1, 1),
    _pw("mb.features.1.project", 32, 112, 16, 1),
    _pw("mb.features.2.expand", 16, 112, 96, 1),
    _dw("mb.features.2.dw", 96, 112, 2, 1),
    _pw("mb.features.2.project", 96, 56, 24, 1),
    _pw("mb.features.3.expand", 24, 56, 144, 2),
    _dw("mb.features.3.dw", 144, 56, 1, 1),
    _pw("mb.features.3.project", 144, 56, 24, 1),
    _dw("mb.features.4.dw", 144, 56, 2, 1),
    _pw("mb.features.4.project", 144, 28, 32, 1),
    _pw("mb.features.5.expand", 32, 28, 192, 3),
    _dw("mb.features.5.dw", 192, 28, 1, 2),
    _pw("mb.features.5.project", 192, 28, 32, 2),
    _dw("mb.features.7.dw", 192, 28, 2, 1),
    _pw("mb.features.7.project", 192, 14, 64, 1),
    _pw("mb.features.8.expand", 64, 14, 384, 4),
    _dw("mb.features.8.dw", 384, 14, 1, 4),
    _pw("mb.features.8.project", 384, 14, 64, 3),
    _pw("mb.features.11.project", 384, 14, 96, 1),
    _pw("mb.features.12.expand", 96, 14, 576, 3),
    _dw("mb.features.12.dw", 576, 14, 1, 2),
    _pw("mb.features.12.project", 576, 14, 96, 2),
    _dw("mb.features.14.dw", 576, 14, 2, 1),
    _pw("mb.features.14.project", 576, 7, 160, 1),
    _pw("mb.features.15.expand", 160, 7, 960, 3),
    _dw("mb.features.15.dw", 960, 7, 1, 3),
    _pw("mb.features.15.project", 960, 7, 160, 2),
    _pw("mb.features.17.project", 960, 7, 320, 1),
    _pw("mb.features.18", 320, 7, 1280, 1),
]
assert sum(layer.count for layer in MOBILENETV2) == 51

LARGE = "large kernel"


def _lk(name, n, c_in, hw, c_out, k, groups=1):
    return Layer(name, n, c_in, hw, hw, c_out, k, k, 1, k // 2, groups=groups, net=LARGE)


# Large kernels, where convscope's FFT path is the point: dense 15×15 and 31×31 ('same'
# padding) on one sample and on a batch, a 7×7 with 64 channels (FFT is chosen, but the kernel's
# spectrum is large), and RepLKNet's 31×31 depthwise convolution (its first stage: 128 channels
# at 56²).  They are timed like the others but kept out of the geomeans of the targets.
LARGE_KERNELS = [
    _lk("lk.15x15", 1, 32, 64, 32, 15),
    _lk("lk.31x31", 1, 32, 64, 32, 31),
    _lk("lk.15x15.n8", 8, 16, 64, 16, 15),
    _lk("lk.7x7", 8, 64, 56, 64, 7),
    _lk("lk.dw31", 8, 128, 56, 128, 31, groups=128),
]

LAYERS = RESNET50 + [SEED_004] + MOBILENETV2 + LARGE_KERNELS

# --quick: the stem, a 3×3 at each stride and at a large and a small image,
# 1×1s with few and with many channels, a strided projection, and seed 004.
QUICK = ["conv1", "layer1.0.conv2", "layer1.1.conv1", "layer2.0.downsample",
         "layer3.0.conv2", "layer3.1.conv2", "layer4.1.conv1", "seed 004",
         "mb.features.1.dw", "mb.features.4.dw", "mb.features.3.expand"]


# --------------------------------------------------------------------------- machine


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def numpy_blas() -> str:
    """NumPy's BLAS: name, version, kernel and thread count, as far as they can be found."""
    name = version = ""
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        name, version = blas.get("name", ""), blas.get("version", "")
    except Exception:
        pass
    extra = []
    try:
        import threadpoolctl

        for pool in threadpoolctl.threadpool_info():
            if pool.get("user_api") == "blas" and "numpy" in pool.get("filepath", ""):
                extra = [f"{pool.get('architecture')}", f"{pool.get('num_threads')} threads"]
                break
    except ImportError:
        extra = _openblas_via_ctypes()
    return " ".join(x for x in [name, version] if x) + (f" ({', '.join(extra)})" if extra else "")


def _openblas_via_ctypes() -> list[str]:
    """Kernel and threads of the OpenBLAS NumPy loaded, read through its C API (Linux)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
    except OSError:
        return []
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas_", "64_"), ("scipy_openblas_", ""), ("openblas_", "64_"),
                               ("openblas_", "")):
            try:
                corename = getattr(lib, f"{prefix}get_corename{suffix}")
                threads = getattr(lib, f"{prefix}get_num_threads{suffix}")
            except AttributeError:
                continue
            corename.restype = ctypes.c_char_p
            return [corename().decode(), f"{threads()} threads"]
    return []


def machine_facts(cores: int) -> list[tuple[str, str]]:
    mem = memory_gib()
    return [
        ("CPU", f"{cpu_model()}, {cores} usable cores"
                + (f", {mem:.0f} GiB RAM" if mem else "")),
        ("OS", platform.platform()),
        ("Python", platform.python_version()),
        ("NumPy", f"{np.__version__}, BLAS {numpy_blas()}"),
        ("torch", f"{torch.__version__}, {torch.get_num_threads()} threads "
                  f"(CPU capability {torch.backends.cpu.get_cpu_capability()})"),
        ("convscope", convscope.__version__),
    ]


MALLOC_MODES = {
    # mode: (mmap threshold, trim threshold) in bytes, or None to leave glibc alone
    "reuse": (1 << 30, 1 << 30),
    "glibc-steady": (32 << 20, 64 << 20),
    "default": None,
}


def configure_malloc(mode: str) -> str:
    """Set glibc's mmap and trim thresholds as ``mode`` says; return a description."""
    thresholds = MALLOC_MODES[mode]
    if thresholds is None:
        return "malloc left at its defaults"
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        ok = libc.mallopt(M_MMAP_THRESHOLD, thresholds[0]) and libc.mallopt(M_TRIM_THRESHOLD, thresholds[1])
    except (OSError, AttributeError):
        ok = False
    if not ok:
        return "malloc left at its defaults (not glibc)"
    mib = [f"{t >> 20} MiB" if t < 1 << 30 else f"{t >> 30} GiB" for t in thresholds]
    return f"malloc {mode}: glibc mmap threshold {mib[0]}, trim threshold {mib[1]}"


class OtherLoad:
    """Share of the machine's CPU time used by other processes between start() and stop()."""

    def __init__(self, cores: int):
        self.cores = cores
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    @staticmethod
    def _busy_ticks() -> int | None:
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
        except OSError:
            return None
        return sum(v[:8]) - v[3] - v[4]        # everything but idle and iowait

    def wait_idle(self, max_wait: float, threshold: float = 0.05, window: float = 1.0) -> bool:
        """Wait (at most ``max_wait`` s) for a ``window`` during which the CPU was at least
        ``1 − threshold`` idle.  True if one came."""
        deadline = time.perf_counter() + max_wait
        while True:
            b0, w0 = self._busy_ticks(), time.perf_counter()
            if b0 is None:
                return True
            time.sleep(window)
            busy = (self._busy_ticks() - b0) / self.tick / ((time.perf_counter() - w0) * self.cores)
            if busy <= threshold:
                return True
            if time.perf_counter() > deadline:
                return False

    def start(self):
        self._b0, self._t0, self._w0 = self._busy_ticks(), os.times(), time.perf_counter()

    def stop(self) -> float | None:
        b1, t1, w1 = self._busy_ticks(), os.times(), time.perf_counter()
        if b1 is None or self._b0 is None:
            return None
        own = (t1.user + t1.system) - (self._t0.user + self._t0.system)
        others = (b1 - self._b0) / self.tick - own
        return max(0.0, others / ((w1 - self._w0) * self.cores))


# --------------------------------------------------------------------------- timing


def _run_for(fn, seconds: float) -> tuple[int, float]:
    """Call ``fn`` at least once and until ``seconds`` have passed: (calls, seconds taken)."""
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return calls, elapsed


def interleaved(fns, repeats: int, handover: float, min_sample: float) -> list[float]:
    """Median seconds per call of each of ``fns``, sampled in turn: f0, f1, f0, f1, ...

    A sample is ``handover`` seconds of untimed calls (at least one), which leave the
    other library's idle worker threads time to stop spinning and warm this one's up,
    then timed calls, back to back, for at least ``min_sample`` seconds (at least one).
    """
    samples: list[list[float]] = [[] for _ in fns]
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for i, fn in enumerate(fns):
                _run_for(fn, handover)
                calls, elapsed = _run_for(fn, min_sample)
                samples[i].append(elapsed / calls)
    finally:
        if gc_was_enabled:
            gc.enable()
    return [statistics.median(s) for s in samples]


@dataclass
class Result:
    layer: Layer
    fwd_torch: float
    fwd_cs: float
    fb_torch: float
    fb_cs: float
    fwd_err: float
    grad_err: float
    other_load: float | None
    algorithms: str = ""       # convscope's choice: forward / grad_input / grad_weight

    @property
    def fwd_ratio(self) -> float:
        return self.fwd_cs / self.fwd_torch

    @property
    def fb_ratio(self) -> float:
        return self.fb_cs / self.fb_torch


def rel_err(actual: np.ndarray, expected: np.ndarray) -> float:
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(a - e).max() / max(np.abs(e).max(), 1e-30))


def bench_layer(layer: Layer, repeats: int, handover: float, min_sample: float,
                rng: np.random.Generator, wait_idle: float = 0.0, retries: int = 0) -> Result:
    """Accuracy and interleaved timings of one layer.

    With ``wait_idle`` > 0, first wait up to that long for the machine to be idle.  If other
    processes used more than ``LOAD_FLAG`` of the CPU while the layer was timed, time it
    again, up to ``retries`` more times, and keep the least disturbed attempt.
    """
    x = rng.standard_normal((layer.N, layer.C_in, layer.H, layer.W), dtype=DTYPE)
    fan_in = layer.C_in // layer.groups * layer.kH * layer.kW
    w = rng.standard_normal((layer.C_out, layer.C_in // layer.groups, layer.kH, layer.kW),
                            dtype=DTYPE) / np.float32(math.sqrt(fan_in))
    b = rng.standard_normal(layer.C_out, dtype=DTYPE)
    g = rng.standard_normal((layer.N, layer.C_out, layer.H_out, layer.W_out), dtype=DTYPE)
    s, p, grp = layer.stride, layer.padding, layer.groups

    xt, wt, bt, gt = (torch.from_numpy(a) for a in (x, w, b, g))
    xg, wg, bg = (t.detach().clone().requires_grad_(True) for t in (xt, wt, bt))

    def torch_fwd():
        return F.conv2d(xt, wt, bt, s, p, 1, grp)

    def cs_fwd():
        return convscope.conv2d(x, w, b, stride=s, padding=p, groups=grp)

    def torch_fb():
        xg.grad = wg.grad = bg.grad = None
        F.conv2d(xg, wg, bg, s, p, 1, grp).backward(gt)

    def cs_fb():
        convscope.conv2d(x, w, b, stride=s, padding=p, groups=grp)
        return convscope.conv2d_backward(g, x, w, s, p, 1, grp, "zeros")

    # accuracy, once, outside the timings
    fwd_err = rel_err(cs_fwd(), torch_fwd().numpy())
    torch_fb()
    grads = cs_fb()
    grad_err = max(rel_err(grads.input, xg.grad.numpy()),
                   rel_err(grads.weight, wg.grad.numpy()),
                   rel_err(grads.bias, bg.grad.numpy()))

    load = OtherLoad(usable_cores())
    best = None
    for attempt in range(1 + retries):
        if wait_idle:
            load.wait_idle(wait_idle)
        gc.collect()
        load.start()
        fwd_torch, fwd_cs = interleaved([torch_fwd, cs_fwd], repeats, handover, min_sample)
        fb_torch, fb_cs = interleaved([torch_fb, cs_fb], repeats, handover, min_sample)
        other = load.stop()
        result = Result(layer, fwd_torch, fwd_cs, fb_torch, fb_cs, fwd_err, grad_err, other,
                        chosen_algorithms(layer))
        if best is None or (other or 0.0) < (best.other_load or 0.0):
            best = result
        if other is None or other <= LOAD_FLAG:
            break
    return best


ALGORITHM_ABBREV = {"gemm": "gemm", "pointwise": "1x1", "depthwise": "dw", "winograd": "wino",
                    "fft": "fft", "reference": "ref"}


def chosen_algorithms(layer: Layer) -> str:
    """convscope's plan for the layer: forward/grad_input/grad_weight, abbreviated."""
    plan = convscope.plan((layer.N, layer.C_in, layer.H, layer.W),
                          (layer.C_out, layer.C_in // layer.groups, layer.kH, layer.kW),
                          stride=layer.stride, padding=layer.padding, groups=layer.groups)
    names = [ALGORITHM_ABBREV.get(c.algorithm, c.algorithm) for c in plan]
    return names[0] if len(set(names)) == 1 else "/".join(names)


def gemm_gflops(repeats: int, handover: float, n: int = 2048) -> tuple[float, float]:
    """GFLOP/s of an n×n @ n×n float32 product: NumPy's BLAS and torch's (median)."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n), dtype=DTYPE)
    bm = rng.standard_normal((n, n), dtype=DTYPE)
    at, bt = torch.from_numpy(a), torch.from_numpy(bm)
    flops = 2 * n**3
    t_np, t_torch = interleaved([lambda: a @ bm, lambda: at @ bt], repeats, handover, 0.0)
    return flops / t_np / 1e9, flops / t_torch / 1e9


# --------------------------------------------------------------------------- report


def geomean(values) -> float:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))



HEADER = ["layer", "conv", "×", "algorithm", "fwd torch ms", "fwd cs ms", "fwd ratio", "fwd torch GF/s",
          "fwd cs GF/s", "fwd err", "f+b torch ms", "f+b cs ms", "f+b ratio", "f+b torch GF/s",
          "f+b cs GF/s", "grad err"]


def _rate(v: float) -> str:
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def row(r: Result) -> list[str]:
    L = r.layer
    f1, f3 = L.forward_flops / 1e9, 3 * L.forward_flops / 1e9
    flag = " †" if r.other_load is not None and r.other_load > LOAD_FLAG else ""
    return [
        L.name + flag, L.describe(), str(L.count) if L.net not in ("seed", LARGE) else "", r.algorithms,
        f"{r.fwd_torch * 1e3:.3f}", f"{r.fwd_cs * 1e3:.3f}", f"{r.fwd_ratio:.2f}",
        _rate(f1 / r.fwd_torch), _rate(f1 / r.fwd_cs), f"{r.fwd_err:.1e}",
        f"{r.fb_torch * 1e3:.3f}", f"{r.fb_cs * 1e3:.3f}", f"{r.fb_ratio:.2f}",
        _rate(f3 / r.fb_torch), _rate(f3 / r.fb_cs), f"{r.grad_err:.1e}",
    ]


NUMERIC = {2} | set(range(4, len(HEADER)))


def text_line(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.rjust(w) if i in NUMERIC else c.ljust(w)
                     for i, (c, w) in enumerate(zip(cells, widths)))


WIDTHS = [max(len(h), w) for h, w in zip(HEADER, [22, 36, 2, 14, 8, 8, 6, 6, 6, 7, 8, 8, 6, 6, 6, 7])]


def _weighted(results, net):
    n = sum(r.layer.count for r in results)
    tf = sum(r.layer.count * r.fwd_torch for r in results)
    cf = sum(r.layer.count * r.fwd_cs for r in results)
    tb = sum(r.layer.count * r.fb_torch for r in results)
    cb = sum(r.layer.count * r.fb_cs for r in results)
    return (f"{net} convolutions weighted by occurrence ({n} convs, batch {BATCH})",
            f"forward torch {tf * 1e3:.0f} ms, convscope {cf * 1e3:.0f} ms ({cf / tf:.2f}×); "
            f"forward+backward torch {tb * 1e3:.0f} ms, convscope {cb * 1e3:.0f} ms ({cb / tb:.2f}×)")


def _is_big_3x3_s1(layer: Layer) -> bool:
    return (layer.kH == layer.kW == 3 and layer.stride == 1 and layer.groups == 1
            and min(layer.C_in, layer.C_out) >= 64)


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def summary(results: list[Result], gemm: tuple[float, float]) -> list[tuple[str, str]]:
    out = []
    everything = results
    # the large-kernel layers are reported apart: the targets are about the networks' layers
    results = [r for r in everything if r.layer.net != LARGE] or everything
    apart = "" if len(results) == len(everything) else " (large kernels apart)"
    g_fwd, g_fb = geomean(r.fwd_ratio for r in results), geomean(r.fb_ratio for r in results)
    out.append((f"geomean ratio convscope/torch, all {len(results)} layers{apart}",
                f"forward {g_fwd:.2f}×, forward+backward {g_fb:.2f}×"))
    nets = {}
    for r in everything:
        nets.setdefault(r.layer.net, []).append(r)
    for net, rs in nets.items():
        if net != "seed" and len(rs) != len(everything):
            out.append((f"geomean ratio, the {len(rs)} {net} layers only"
                        + (" (not in the targets)" if net == LARGE else ""),
                        f"forward {geomean(r.fwd_ratio for r in rs):.2f}×, "
                        f"forward+backward {geomean(r.fb_ratio for r in rs):.2f}×"))
    for net, rs in nets.items():
        if net not in ("seed", LARGE):
            out.append(_weighted(rs, net))
    worst_f = max(results, key=lambda r: r.fwd_ratio)
    worst_b = max(results, key=lambda r: r.fb_ratio)
    out.append(("slowest layers relative to torch",
                f"forward {worst_f.layer.name} {worst_f.fwd_ratio:.2f}×, "
                f"forward+backward {worst_b.layer.name} {worst_b.fb_ratio:.2f}×; "
                f"{sum(r.fwd_ratio > WORST_TARGET for r in results)} forward and "
                f"{sum(r.fb_ratio > WORST_TARGET for r in results)} forward+backward rows above {WORST_TARGET:g}×"))
    big = [r for r in results if _is_big_3x3_s1(r.layer)]
    if big:
        rates = [(r.layer.name, r.layer.forward_flops / r.fwd_cs / 1e9) for r in big]
        worst_rate = min(v for _, v in rates)
        out.append(("3×3 stride-1 layers with ≥ 64 channels, forward GF/s ÷ NumPy GEMM GF/s",
                    ", ".join(f"{n} {v / gemm[0]:.2f}" for n, v in rates)))
    accuracy = max(max(r.fwd_err, r.grad_err) for r in everything)
    targets = [
        f"forward geomean ≤ {FWD_TARGET:g}×: {_met(g_fwd <= FWD_TARGET)}",
        f"forward+backward geomean ≤ {FWD_BWD_TARGET:g}×: {_met(g_fb <= FWD_BWD_TARGET)}",
        f"no layer above {WORST_TARGET:g}×: {_met(max(worst_f.fwd_ratio, worst_b.fb_ratio) <= WORST_TARGET)}",
    ]
    if big:
        targets.append(f"3×3/1 ≥ 64 channels at ≥ {WINOGRAD_GEMM_TARGET:g}× GEMM GF/s: "
                       f"{_met(worst_rate >= WINOGRAD_GEMM_TARGET * gemm[0])}")
    targets.append(f"accuracy ≤ {ACCURACY_TARGET:g}: {_met(accuracy <= ACCURACY_TARGET)}")
    if len(results) == len(everything) and all(r.layer.net == LARGE for r in results):
        targets = ["not evaluated: they are about the networks' layers, and only large kernels were run"]
    out.append(("targets", "; ".join(targets)))
    out.append(("float32 GEMM 2048×2048 @ 2048×2048 (median)",
                f"NumPy {gemm[0]:.0f} GFLOP/s, torch {gemm[1]:.0f} GFLOP/s"))
    out.append(("worst accuracy (max |convscope − torch| / max |torch|)",
                f"forward {max(r.fwd_err for r in everything):.1e}, "
                f"gradients {max(r.grad_err for r in everything):.1e}"))
    loads = [r.other_load for r in everything if r.other_load is not None]
    if loads:
        flagged = sum(1 for x in loads if x > LOAD_FLAG)
        out.append(("CPU used by other processes while measuring",
                    f"mean {100 * statistics.mean(loads):.1f}%, max {100 * max(loads):.1f}%"
                    + (f"; {flagged} layer(s) above {100 * LOAD_FLAG:.0f}% marked †" if flagged else "")))
    return out


def markdown(results, gemm, facts, settings, command, started) -> str:
    lines = [
        "# convscope vs torch: Conv2d on ResNet-50's and MobileNetV2's layers",
        "",
        f"- date: {started:%Y-%m-%d %H:%M %Z}".rstrip(),
        f"- command: `{command}`",
    ]
    lines += [f"- {k}: {v}" for k, v in facts]
    lines += [f"- {settings}", ""]
    lines.append("| " + " | ".join(HEADER) + " |")
    lines.append("|" + "|".join("---:" if i in NUMERIC else "---" for i in range(len(HEADER))) + "|")
    for r in results:
        lines.append("| " + " | ".join(row(r)) + " |")
    lines.append("")
    for k, v in summary(results, gemm):
        lines.append(f"- **{k}**: {v}")
    lines += [
        "",
        "ms: median time per call; ratio: convscope ms / torch ms (below 1: convscope is faster); "
        "GF/s: direct-convolution FLOPs (forward 2·N·C_out·H_out·W_out·C_in/groups·kH·kW, "
        "forward+backward 3×) per second; fwd err, grad err: max |convscope − torch| / max |torch| "
        "for the output and (worst of) the three gradients; ×: occurrences in the network; "
        "algorithm: convscope's choice for forward / grad_input / grad_weight (one name: all three; "
        "1x1 pointwise, dw depthwise, wino Winograd F(4×4, 3×3), fft FFT, gemm im2col); "
        f"†: other processes used more than {100 * LOAD_FLAG:.0f}% of the CPU while the row was measured.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help=f"{len(QUICK)} representative layers and fewer repeats (~1 minute)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="timed samples per layer, pass and library (default 11, 5 with --quick)")
    ap.add_argument("--markdown", metavar="FILE", help="also write the results as Markdown to FILE")
    ap.add_argument("--layers", metavar="NAME", nargs="+",
                    help="only these layers (names as in the first column)")
    ap.add_argument("--handover", type=float, default=0.2, metavar="S",
                    help="untimed calls before each timed sample, seconds (default 0.2)")
    ap.add_argument("--wait-idle", type=float, default=60.0, metavar="S",
                    help="before each layer wait up to S seconds for the CPU to be idle (default 60; 0: don't)")
    ap.add_argument("--retries", type=int, default=2, metavar="N",
                    help="time a layer again, up to N times, when other processes used more than "
                         f"{100 * LOAD_FLAG:.0f}%% of the CPU meanwhile (default 2)")
    ap.add_argument("--malloc", choices=list(MALLOC_MODES), default="reuse",
                    help="'reuse' (default): glibc keeps and reuses freed memory, so neither library "
                         "page-faults in steady state; 'glibc-steady': the thresholds glibc settles at "
                         "by itself (mmap 32 MiB, trim 64 MiB); 'default': leave glibc alone")
    ap.add_argument("--min-sample", type=float, default=0.02, metavar="S",
                    help="a sample repeats a call until it lasts this long (default 0.02 s)")
    args = ap.parse_args(argv)

    repeats = args.repeat or (5 if args.quick else 11)
    handover = args.handover
    names = args.layers or (QUICK if args.quick else [layer.name for layer in LAYERS])
    by_name = {layer.name: layer for layer in LAYERS}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        ap.error(f"unknown layer(s) {unknown}; known: {list(by_name)}")
    layers = [by_name[n] for n in names]

    allocator = configure_malloc(args.malloc)
    cores = usable_cores()
    torch.set_num_threads(cores)
    started = datetime.datetime.now().astimezone()
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + sys.argv[1:]) \
        if argv is None else "bench_conv.main(" + repr(argv) + ")"
    facts = machine_facts(cores)
    settings = (f"float32, {len(layers)} layers, {repeats} interleaved repeats per pass (median), "
                f"each sample {handover:g} s of untimed calls then ≥ {args.min_sample:g} s of timed calls, "
                f"{allocator}")

    print(f"# {started:%Y-%m-%d %H:%M %Z}  {command}")
    for k, v in facts:
        print(f"# {k}: {v}")
    print(f"# {settings}")
    print()
    print(text_line(HEADER, WIDTHS))
    rng = np.random.default_rng(0)
    results = []
    t_start = time.perf_counter()
    for layer in layers:
        r = bench_layer(layer, repeats, handover, args.min_sample, rng, args.wait_idle, args.retries)
        results.append(r)
        print(text_line(row(r), WIDTHS), flush=True)
    if args.wait_idle:
        OtherLoad(cores).wait_idle(args.wait_idle)
    gemm = gemm_gflops(max(5, repeats), handover)
    print()
    for k, v in summary(results, gemm):
        print(f"{k}: {v}")
    print(f"(total {time.perf_counter() - t_start:.0f} s)")

    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(markdown(results, gemm, facts, settings, command, started))
        print(f"Markdown written to {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
