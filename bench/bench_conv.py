#!/usr/bin/env python
"""Time convscope's fast paths against torch, onnxruntime and JAX on ResNet-50's and MobileNetV2's conv layers.

Usage::

    python bench/bench_conv.py                       # all 53 layers and 5 large kernels
    python bench/bench_conv.py --quick               # 11 representative layers
    python bench/bench_conv.py --method process      # each library in its own process
    python bench/bench_conv.py --markdown bench/results.md
    python bench/bench_conv.py --layers lk.15x15 lk.31x31 lk.15x15.n8 lk.7x7 lk.dw31   # the large kernels

Every library runs in float32 on the same arrays: torch (``torch.nn.functional.conv2d``, the
reference the ratios are taken to), convscope (``algorithm=None``: its planner picks an
implementation per pass, shown in the ``algorithm`` column), and, where installed, what a user
would pick instead: onnxruntime (forward: a one-node ONNX ``Conv`` model per layer) and JAX
(``jax.lax.conv_general_dilated`` under ``jax.jit``, forward and forward+backward through
``jax.vjp``).  For every layer and pass the libraries are sampled in turn, round after round
(torch, convscope, onnxruntime, JAX, torch, ...), and the median of each one's samples is
reported.

Passes
------
forward           ``conv2d(x, w, b)``
forward+backward  the forward, then all three gradients: torch through autograd
                  (``requires_grad`` on input, weight and bias, ``out.backward(grad)``),
                  convscope through ``conv2d`` then ``conv2d_backward``, JAX through ``jax.vjp``.

Effective GFLOP/s use the direct-convolution count
``2·N·C_out·H_out·W_out·(C_in/groups)·kH·kW`` for the forward and three times that
for forward+backward, whatever the algorithm really does.

Methods (``--method``)
----------------------
Two thread pools in one process get in each other's way: after every call OpenBLAS's idle workers
busy-wait for about 2^28 cycles (~0.1 s) and hold the cores that the next library's team (torch's
OpenMP, numba's, onnxruntime's, XLA's) then waits for, which makes a call right after another
library's several times slower.  A pause does not help either: waking a pool that has gone to sleep
costs milliseconds on this kind of (virtual) machine.  So every timed sample is preceded by
``--handover`` seconds (default 0.2) of untimed calls of the same library, which lets the other
library's workers go idle and keeps this one's awake; each library is then timed as it runs when
called back to back.

* ``handover`` (default): all libraries in this process, each sample after its handover.
* ``process``: each library in its own worker process (started once, importing only that library),
  sampled in the same alternating rounds, each sample again after its handover; the arrays are sent
  to every worker.  Nothing is shared: not the thread pools, not the OpenMP runtime (torch's and
  numba's are the same library when loaded in one process), not the allocator.

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
timing anything (in every worker too), so freed memory is kept and reused and
no library pays page faults in steady state, as with a caching allocator.
``--malloc glibc-steady`` uses the values glibc itself settles at in a
long-running process (mmap 32 MiB, trim 64 MiB), ``--malloc default`` leaves
glibc alone.

Compile time
------------
convscope's compiled kernels (numba, ``cache=True``) compile once per machine.  The script times
that separately: a fresh process with an empty ``NUMBA_CACHE_DIR`` runs one small layer of each
kind, forward and backward, and reports the first calls' time beyond the steady calls' (then
again with the cache filled: the cost of loading the compiled kernels in a new process).

Other processes
---------------
Before each layer the script waits (``--wait-idle``) for the CPU to be idle,
measures the CPU time other processes (not its workers) used while the layer
was timed, times the layer again (``--retries``) if that exceeded 5 %, and
marks the row with a † if it still did.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import importlib.metadata
import json
import math
import multiprocessing
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))   # this checkout's convscope

import numpy as np

BATCH = 8
DTYPE = np.float32

FWD_TARGET = 1.0          # geomean convscope/torch, forward
FWD_BWD_TARGET = 0.9      # geomean convscope/torch, forward+backward
WORST_TARGET = 2.0        # no layer's ratio above this
DEPTHWISE_TARGET = 1.3    # depthwise layers: no ratio above this
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

# Timed only when named with --layers (not in the default run, so not in its targets): torchvision's
# resnext50_32x4d's grouped 3×3 convolutions (32 groups), one per stage's shape.
RESNEXT50 = [
    Layer("rx.layer1.0.conv2", BATCH, 128, 56, 56, 128, 3, 3, 1, 1, groups=32, count=3, net="ResNeXt-50"),
    Layer("rx.layer2.0.conv2", BATCH, 256, 56, 56, 256, 3, 3, 2, 1, groups=32, count=1, net="ResNeXt-50"),
    Layer("rx.layer3.1.conv2", BATCH, 512, 14, 14, 512, 3, 3, 1, 1, groups=32, count=5, net="ResNeXt-50"),
]

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
    """The CPU's model name, with its family, model and widest vector extension (a name such as
    "AMD EPYC" covers several generations, which rank the algorithms differently)."""
    facts = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                facts.setdefault(key.strip(), value.strip())
                if key.strip() == "flags":
                    break
    except OSError:
        pass
    name = facts.get("model name") or platform.processor() or platform.machine()
    if "cpu family" not in facts:
        return name
    flags = facts.get("flags", "").split()
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{name} (family {facts['cpu family']} model {facts.get('model', '?')}, {vector})"


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
    forced = [f"{v}={os.environ[v]} in the environment" for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
              if v in os.environ]
    extra += forced
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
    """The machine and NumPy; each library's version and threads come from :func:`library_facts`."""
    mem = memory_gib()
    return [
        ("CPU", f"{cpu_model()}, {cores} usable cores"
                + (f", {mem:.0f} GiB RAM" if mem else "")),
        ("OS", platform.platform()),
        ("Python", platform.python_version()),
        ("NumPy", f"{np.__version__}, BLAS {numpy_blas()}"),
    ]


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


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

    def __init__(self, cores: int, workers=()):
        self.cores = cores
        self.workers = list(workers)       # processes of our own (--method process), not "others"
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def _own_seconds(self) -> float:
        t = os.times()
        own = t.user + t.system
        for pid in self.workers:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                own += (int(fields[11]) + int(fields[12])) / self.tick     # utime, stime
            except (OSError, IndexError, ValueError):
                pass
        return own

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
        self._b0, self._t0, self._w0 = self._busy_ticks(), self._own_seconds(), time.perf_counter()

    def stop(self) -> float | None:
        b1, t1, w1 = self._busy_ticks(), self._own_seconds(), time.perf_counter()
        if b1 is None or self._b0 is None:
            return None
        own = t1 - self._t0
        others = (b1 - self._b0) / self.tick - own
        return max(0.0, others / ((w1 - self._w0) * self.cores))


# --------------------------------------------------------------------------- libraries


LIBRARIES = ("torch", "convscope", "onnxruntime", "jax")
PASSES = ("fwd", "fb")
# which passes each library is timed on (onnxruntime runs inference only)
LIBRARY_PASSES = {"torch": PASSES, "convscope": PASSES, "onnxruntime": ("fwd",), "jax": PASSES}
SHORT = {"torch": "torch", "convscope": "cs", "onnxruntime": "ort", "jax": "jax"}
DISTRIBUTION = {"torch": "torch", "convscope": "convscope", "onnxruntime": "onnxruntime", "jax": "jax"}
# the modules a library's column needs (onnxruntime's models are built with the onnx package)
MODULES = {"torch": ("torch",), "convscope": ("convscope",), "onnxruntime": ("onnxruntime", "onnx"),
           "jax": ("jax",)}


def installed(lib: str) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in MODULES.get(lib, (lib,)))


def layer_arrays(layer: Layer, rng: np.random.Generator) -> dict:
    """x, w (scaled by 1/√fan-in, so that outputs are of order 1), b and a random output gradient g."""
    x = rng.standard_normal((layer.N, layer.C_in, layer.H, layer.W), dtype=DTYPE)
    fan_in = layer.C_in // layer.groups * layer.kH * layer.kW
    w = rng.standard_normal((layer.C_out, layer.C_in // layer.groups, layer.kH, layer.kW),
                            dtype=DTYPE) / np.float32(math.sqrt(fan_in))
    b = rng.standard_normal(layer.C_out, dtype=DTYPE)
    g = rng.standard_normal((layer.N, layer.C_out, layer.H_out, layer.W_out), dtype=DTYPE)
    return dict(x=x, w=w, b=b, g=g)


def threading_layer() -> str:
    """The threading layer numba runs convscope's compiled kernels on (the one it will pick, before a launch)."""
    from convscope.algorithms.kernels import _numba

    try:
        return _numba.numba.threading_layer()
    except ValueError:                  # no kernel launched yet
        return _numba.numba.config.THREADING_LAYER


def library_facts(lib: str, threads: int) -> str:
    """Version and thread settings of ``lib`` as this process runs it (after :func:`prepare`)."""
    if lib == "torch":
        import torch

        return (f"{torch.__version__}, {torch.get_num_threads()} threads "
                f"(CPU capability {torch.backends.cpu.get_cpu_capability()})")
    if lib == "convscope":
        import convscope

        numba = _version("numba")
        return f"{convscope.__version__}, {convscope.get_num_threads()} threads, numba {numba} ({threading_layer()} layer)"
    if lib == "onnxruntime":
        import onnx
        import onnxruntime

        return f"{onnxruntime.__version__} (onnx {onnx.__version__}), {threads} intra-op threads"
    import jax

    return f"{jax.__version__} (jaxlib {_version('jaxlib')}), backend {jax.default_backend()}"


def prepare(lib: str, threads: int) -> None:
    """Import ``lib`` and set its thread count, once per process."""
    if lib == "torch":
        import torch

        torch.set_num_threads(threads)
    elif lib == "convscope":
        import convscope

        convscope.set_num_threads(threads)
    elif lib == "jax":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        import jax  # noqa: F401


@dataclass
class Calls:
    """One library's calls on one layer: ``run[pass]()`` does one call; ``outputs[pass]()`` gives its
    results as NumPy arrays (forward: the output; forward+backward: ∂x, ∂w, ∂b)."""

    run: dict
    outputs: dict


def build(lib: str, layer: Layer, a: dict, threads: int) -> Calls:
    s, p, grp = layer.stride, layer.padding, layer.groups
    x, w, b, g = a["x"], a["w"], a["b"], a["g"]
    if lib == "torch":
        import torch
        import torch.nn.functional as F

        xt, wt, bt, gt = (torch.from_numpy(v) for v in (x, w, b, g))
        xg, wg, bg = (t.detach().clone().requires_grad_(True) for t in (xt, wt, bt))

        def fwd():
            return F.conv2d(xt, wt, bt, s, p, 1, grp)

        def fb():
            xg.grad = wg.grad = bg.grad = None
            F.conv2d(xg, wg, bg, s, p, 1, grp).backward(gt)

        def fb_out():
            fb()
            return xg.grad.numpy(), wg.grad.numpy(), bg.grad.numpy()

        return Calls({"fwd": fwd, "fb": fb}, {"fwd": lambda: fwd().numpy(), "fb": fb_out})
    if lib == "convscope":
        import convscope

        def fwd():
            return convscope.conv2d(x, w, b, stride=s, padding=p, groups=grp)

        def fb():
            convscope.conv2d(x, w, b, stride=s, padding=p, groups=grp)
            return convscope.conv2d_backward(g, x, w, s, p, 1, grp, "zeros")

        return Calls({"fwd": fwd, "fb": fb}, {"fwd": fwd, "fb": lambda: tuple(fb())})
    if lib == "onnxruntime":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(onnx_conv_model(layer, w, b), options,
                                               providers=["CPUExecutionProvider"])
        feed = {"x": x}

        def fwd():
            return session.run(None, feed)[0]

        return Calls({"fwd": fwd}, {"fwd": fwd})
    import jax
    import jax.numpy as jnp

    def conv(xv, wv, bv):
        y = jax.lax.conv_general_dilated(xv, wv, (s, s), [(p, p), (p, p)], feature_group_count=grp,
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return y + bv[None, :, None, None]

    jfwd = jax.jit(conv)
    jfb = jax.jit(lambda xv, wv, bv, gv: jax.vjp(conv, xv, wv, bv)[1](gv))
    xj, wj, bj, gj = (jnp.asarray(v) for v in (x, w, b, g))

    def fwd():
        return jfwd(xj, wj, bj).block_until_ready()

    def fb():
        return jax.block_until_ready(jfb(xj, wj, bj, gj))

    return Calls({"fwd": fwd, "fb": fb},
                 {"fwd": lambda: np.asarray(fwd()), "fb": lambda: tuple(np.asarray(v) for v in fb())})


def onnx_conv_model(layer: Layer, w: np.ndarray, b: np.ndarray) -> bytes:
    """A one-node ONNX model ``y = Conv(x, w, b)`` for the layer, the weight and bias as initializers."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    p = layer.padding
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[layer.kH, layer.kW],
                            strides=[layer.stride] * 2, pads=[p, p, p, p], dilations=[1, 1],
                            group=layer.groups)
    graph = helper.make_graph(
        [node], f"conv_{layer.name}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [layer.N, layer.C_in, layer.H, layer.W])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                       [layer.N, layer.C_out, layer.H_out, layer.W_out])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def gemm_call(lib: str, n: int = 2048):
    """An n×n @ n×n float32 product through NumPy's BLAS (convscope's matmuls) or torch."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n), dtype=DTYPE)
    bm = rng.standard_normal((n, n), dtype=DTYPE)
    if lib == "torch":
        import torch

        at, bt = torch.from_numpy(a), torch.from_numpy(bm)
        return lambda: at @ bt
    return lambda: a @ bm


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


def sample(fn, handover: float, min_sample: float) -> float:
    """Seconds per call: ``handover`` seconds of untimed calls (at least one), which leave another
    library's idle worker threads time to stop spinning and warm this one's up, then timed calls,
    back to back, for at least ``min_sample`` seconds (at least one)."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        _run_for(fn, handover)
        calls, elapsed = _run_for(fn, min_sample)
    finally:
        if gc_was_enabled:
            gc.enable()
    return elapsed / calls


class InProcess:
    """``--method handover``: every library in this process."""

    method = "handover"

    def __init__(self, libs, threads):
        self.libs, self.threads, self.calls = libs, threads, {}
        for lib in libs:
            prepare(lib, threads)

    def facts(self, lib):
        return library_facts(lib, self.threads)

    def setup(self, layer, arrays):
        self.calls = {lib: build(lib, layer, arrays, self.threads) for lib in self.libs}

    def outputs(self, lib, pass_):
        return self.calls[lib].outputs[pass_]()

    def setup_gemm(self):
        self.calls = {lib: Calls({"gemm": gemm_call(lib)}, {}) for lib in self.libs}

    def sample(self, lib, pass_, handover, min_sample):
        return sample(self.calls[lib].run[pass_], handover, min_sample)

    def pids(self):
        return []

    def close(self):
        self.calls = {}


def _worker(lib, threads, malloc, conn):
    """A ``--method process`` worker: imports only ``lib`` and answers the driver's requests."""
    configure_malloc(malloc)
    prepare(lib, threads)
    calls = None
    while True:
        request, *args = conn.recv()
        try:
            if request == "facts":
                answer = library_facts(lib, threads)
            elif request == "setup":
                calls = build(lib, *args, threads)
                answer = None
            elif request == "setup_gemm":
                calls = Calls({"gemm": gemm_call(lib)}, {})
                answer = None
            elif request == "outputs":
                answer = calls.outputs[args[0]]()
            elif request == "sample":
                answer = sample(calls.run[args[0]], *args[1:])
            else:
                conn.send(("ok", None))
                return
        except Exception as exc:  # reported by the driver with the library's name
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            continue
        conn.send(("ok", answer))


class Processes:
    """``--method process``: one worker process per library, started once (spawned: a fresh
    interpreter that imports only its library)."""

    method = "process"

    def __init__(self, libs, threads, malloc):
        ctx = multiprocessing.get_context("spawn")
        self.libs, self.workers = libs, {}
        for lib in libs:
            here, there = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(lib, threads, malloc, there), daemon=True)
            proc.start()
            self.workers[lib] = (proc, here)

    def _ask(self, lib, *request):
        proc, conn = self.workers[lib]
        conn.send(request)
        status, answer = conn.recv()
        if status != "ok":
            raise RuntimeError(f"{lib} worker: {answer}")
        return answer

    def facts(self, lib):
        return self._ask(lib, "facts")

    def setup(self, layer, arrays):
        for lib in self.libs:
            self._ask(lib, "setup", layer, arrays)

    def outputs(self, lib, pass_):
        return self._ask(lib, "outputs", pass_)

    def setup_gemm(self):
        for lib in self.libs:
            self._ask(lib, "setup_gemm")

    def sample(self, lib, pass_, handover, min_sample):
        return self._ask(lib, "sample", pass_, handover, min_sample)

    def pids(self):
        return [proc.pid for proc, _ in self.workers.values()]

    def close(self):
        for lib, (proc, conn) in self.workers.items():
            try:
                conn.send(("stop",))
                conn.recv()
            except (OSError, EOFError):
                pass
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
        self.workers = {}


def rounds(runner, jobs, repeats: int, handover: float, min_sample: float) -> dict:
    """Median seconds per call of each (library, pass) in ``jobs``, sampled in alternating rounds."""
    samples = {job: [] for job in jobs}
    for _ in range(repeats):
        for lib, pass_ in jobs:
            samples[(lib, pass_)].append(runner.sample(lib, pass_, handover, min_sample))
    return {job: statistics.median(v) for job, v in samples.items()}


@dataclass
class Result:
    layer: Layer
    times: dict                 # (library, pass) → median seconds per call
    errors: dict                # (library, pass) → max |lib − torch| / max |torch| (fb: worst gradient)
    other_load: float | None
    algorithms: str = ""        # convscope's choice: forward / grad_input / grad_weight

    def time(self, lib, pass_):
        return self.times.get((lib, pass_))

    def ratio(self, lib, pass_):
        t = self.time(lib, pass_)
        return None if t is None else t / self.times[("torch", pass_)]

    @property
    def fwd_torch(self):
        return self.times[("torch", "fwd")]

    @property
    def fwd_cs(self):
        return self.times[("convscope", "fwd")]

    @property
    def fb_torch(self):
        return self.times[("torch", "fb")]

    @property
    def fb_cs(self):
        return self.times[("convscope", "fb")]

    @property
    def fwd_ratio(self) -> float:
        return self.fwd_cs / self.fwd_torch

    @property
    def fb_ratio(self) -> float:
        return self.fb_cs / self.fb_torch

    @property
    def fwd_err(self) -> float:
        return self.errors[("convscope", "fwd")]

    @property
    def grad_err(self) -> float:
        return self.errors[("convscope", "fb")]


def rel_err(actual: np.ndarray, expected: np.ndarray) -> float:
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(a - e).max() / max(np.abs(e).max(), 1e-30))


def bench_layer(runner, layer: Layer, repeats: int, handover: float, min_sample: float,
                rng: np.random.Generator, wait_idle: float = 0.0, retries: int = 0) -> Result:
    """Accuracy and alternating timings of one layer, every library of ``runner``.

    With ``wait_idle`` > 0, first wait up to that long for the machine to be idle.  If other
    processes used more than ``LOAD_FLAG`` of the CPU while the layer was timed, time it
    again, up to ``retries`` more times, and keep the least disturbed attempt.
    """
    runner.setup(layer, layer_arrays(layer, rng))
    jobs = [(lib, pass_) for pass_ in PASSES for lib in runner.libs if pass_ in LIBRARY_PASSES[lib]]
    # accuracy, once, outside the timings
    errors = {}
    for pass_ in PASSES:
        want = runner.outputs("torch", pass_)
        for lib in runner.libs:
            if lib != "torch" and pass_ in LIBRARY_PASSES[lib]:
                got = runner.outputs(lib, pass_)
                errors[(lib, pass_)] = (rel_err(got, want) if pass_ == "fwd"
                                        else max(rel_err(u, v) for u, v in zip(got, want)))
    load = OtherLoad(usable_cores(), runner.pids())
    best = None
    for attempt in range(1 + retries):
        if wait_idle:
            load.wait_idle(wait_idle)
        gc.collect()
        load.start()
        times = {}
        for pass_ in PASSES:
            times.update(rounds(runner, [j for j in jobs if j[1] == pass_], repeats, handover, min_sample))
        other = load.stop()
        result = Result(layer, times, errors, other, chosen_algorithms(layer))
        if best is None or (other or 0.0) < (best.other_load or 0.0):
            best = result
        if other is None or other <= LOAD_FLAG:
            break
    return best


ALGORITHM_ABBREV = {"gemm": "gemm", "pointwise": "1x1", "depthwise": "dw", "winograd": "wino",
                    "fft": "fft", "reference": "ref", "direct": "direct"}


def chosen_algorithms(layer: Layer) -> str:
    """convscope's plan for the layer: forward/grad_input/grad_weight, abbreviated."""
    import convscope

    plan = convscope.plan((layer.N, layer.C_in, layer.H, layer.W),
                          (layer.C_out, layer.C_in // layer.groups, layer.kH, layer.kW),
                          stride=layer.stride, padding=layer.padding, groups=layer.groups)
    names = [ALGORITHM_ABBREV.get(c.algorithm, c.algorithm) for c in plan]
    return names[0] if len(set(names)) == 1 else "/".join(names)


def gemm_gflops(runner, repeats: int, handover: float, n: int = 2048) -> tuple[float, float]:
    """GFLOP/s of an n×n @ n×n float32 product: NumPy's BLAS and torch's (median)."""
    runner.setup_gemm()
    libs = [lib for lib in ("convscope", "torch") if lib in runner.libs]
    t = rounds(runner, [(lib, "gemm") for lib in libs], repeats, handover, 0.0)
    return tuple(2 * n**3 / t[(lib, "gemm")] / 1e9 for lib in ("convscope", "torch"))


COMPILE_SCRIPT = textwrap.dedent("""
    import json, time, numpy as np, convscope
    rng = np.random.default_rng(0)
    # (input, weight, keyword arguments): one small layer of each kind convscope plans
    layers = [((2, 64, 12, 12), (64, 64, 3, 3), dict(padding=1)),             # 3×3 stride 1
              ((2, 16, 12, 12), (16, 1, 3, 3), dict(padding=1, groups=16)),   # depthwise
              ((2, 16, 13, 13), (16, 1, 3, 3), dict(padding=1, groups=16, stride=2)),
              ((2, 3, 32, 32), (16, 3, 7, 7), dict(padding=3, stride=2)),     # stem
              ((2, 16, 12, 12), (32, 16, 3, 3), dict(padding=1, stride=2)),   # 3×3 stride 2
              ((2, 32, 12, 12), (32, 8, 3, 3), dict(padding=1, groups=4))]    # grouped
    first = steady = 0.0
    t0 = time.perf_counter()
    import convscope.algorithms.kernels._numba
    imported = time.perf_counter() - t0
    for xs, ws, kw in layers:
        x = rng.standard_normal(xs, dtype=np.float32)
        w = rng.standard_normal(ws, dtype=np.float32)
        g = None
        for attempt in range(2):
            t0 = time.perf_counter()
            y = convscope.conv2d(x, w, **kw)
            g = rng.standard_normal(y.shape, dtype=np.float32) if g is None else g
            convscope.conv2d_backward(g, x, w, **kw)
            spent = time.perf_counter() - t0
            if attempt == 0:
                first += spent
            else:
                steady += spent
    print(json.dumps(dict(first=first, steady=steady, numba_import=imported)))
""")


def compile_cost() -> str:
    """The compiled kernels' one-time cost, from two fresh processes sharing an empty numba cache."""
    with tempfile.TemporaryDirectory(prefix="convscope-numba-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        runs = []
        for _ in range(2):                      # cold (compiles and caches), then warm (loads)
            done = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT], env=env, capture_output=True,
                                  text=True, timeout=900)
            if done.returncode:
                return "not measured: " + (done.stderr.strip().splitlines() or ["failed"])[-1]
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    cold, warm = runs
    return (f"{cold['first'] - cold['steady']:.1f} s to compile (first calls with an empty cache, "
            f"beyond the steady calls' time), {warm['first'] - warm['steady']:.2f} s to load them in a "
            f"new process with the cache filled, plus {warm['numba_import']:.2f} s to import numba; "
            "float32, one small layer of each kind, forward and backward")


# --------------------------------------------------------------------------- report


BASE_HEADER = ["layer", "conv", "×", "algorithm", "fwd torch ms", "fwd cs ms", "fwd ratio", "fwd torch GF/s",
               "fwd cs GF/s", "fwd err", "f+b torch ms", "f+b cs ms", "f+b ratio", "f+b torch GF/s",
               "f+b cs GF/s", "grad err"]
BASE_WIDTHS = [22, 36, 2, 14, 8, 8, 6, 6, 6, 7, 8, 8, 6, 6, 6, 7]
PEERS = ("onnxruntime", "jax")


def peer_columns(libs) -> list[tuple[str, str]]:
    """(library, pass) of the peers' columns, for the libraries that ran."""
    return [(lib, pass_) for lib in PEERS if lib in libs for pass_ in LIBRARY_PASSES[lib]]


def header(libs) -> list[str]:
    return BASE_HEADER + [f"{'fwd' if p == 'fwd' else 'f+b'} {SHORT[lib]} ms" for lib, p in peer_columns(libs)]


def widths(libs) -> list[int]:
    return [max(len(h), w) for h, w in zip(header(libs), BASE_WIDTHS + [8] * len(peer_columns(libs)))]


def _rate(v: float) -> str:
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def row(r: Result, libs) -> list[str]:
    L = r.layer
    f1, f3 = L.forward_flops / 1e9, 3 * L.forward_flops / 1e9
    flag = " †" if r.other_load is not None and r.other_load > LOAD_FLAG else ""
    return [
        L.name + flag, L.describe(), str(L.count) if L.net not in ("seed", LARGE) else "", r.algorithms,
        f"{r.fwd_torch * 1e3:.3f}", f"{r.fwd_cs * 1e3:.3f}", f"{r.fwd_ratio:.2f}",
        _rate(f1 / r.fwd_torch), _rate(f1 / r.fwd_cs), f"{r.fwd_err:.1e}",
        f"{r.fb_torch * 1e3:.3f}", f"{r.fb_cs * 1e3:.3f}", f"{r.fb_ratio:.2f}",
        _rate(f3 / r.fb_torch), _rate(f3 / r.fb_cs), f"{r.grad_err:.1e}",
    ] + [f"{r.time(lib, p) * 1e3:.3f}" for lib, p in peer_columns(libs)]


NUMERIC = {2} | set(range(4, 64))


def text_line(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.rjust(w) if i in NUMERIC else c.ljust(w)
                     for i, (c, w) in enumerate(zip(cells, widths)))


def geomean(values) -> float:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


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


def _is_depthwise(layer: Layer) -> bool:
    return layer.groups > 1 and layer.groups == layer.C_in


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


PASS_NAME = {"fwd": "forward", "fb": "forward+backward"}


def summary(results: list[Result], gemm: tuple[float, float], libs, method: str,
            compile_note: str | None = None) -> list[tuple[str, str]]:
    out = [("method", method)]
    everything = results
    # the large-kernel layers are reported apart: the targets are about the networks' layers
    results = [r for r in everything if r.layer.net != LARGE] or everything
    apart = "" if len(results) == len(everything) else " (large kernels apart)"
    g_fwd, g_fb = geomean(r.fwd_ratio for r in results), geomean(r.fb_ratio for r in results)
    out.append((f"geomean ratio convscope/torch, all {len(results)} layers{apart}",
                f"forward {g_fwd:.2f}×, forward+backward {g_fb:.2f}×"))
    peers = {}
    for lib, pass_ in peer_columns(libs):
        peers[(lib, pass_)] = geomean(r.ratio(lib, pass_) for r in results)
    for lib in PEERS:
        if lib in libs:
            out.append((f"geomean ratio {lib}/torch, the same layers",
                        ", ".join(f"{PASS_NAME[p]} {peers[(lib, p)]:.2f}×" for p in LIBRARY_PASSES[lib])))
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
    above = [r.layer.name for r in results if max(r.fwd_ratio, r.fb_ratio) > WORST_TARGET]
    out.append(("slowest layers relative to torch",
                f"forward {worst_f.layer.name} {worst_f.fwd_ratio:.2f}×, "
                f"forward+backward {worst_b.layer.name} {worst_b.fb_ratio:.2f}×; "
                f"{sum(r.fwd_ratio > WORST_TARGET for r in results)} forward and "
                f"{sum(r.fb_ratio > WORST_TARGET for r in results)} forward+backward rows above {WORST_TARGET:g}×"
                + (f" ({', '.join(above)})" if above else "")))
    dw = [r for r in results if _is_depthwise(r.layer)]
    if dw:
        dw_f = max(dw, key=lambda r: r.fwd_ratio)
        dw_b = max(dw, key=lambda r: r.fb_ratio)
        out.append((f"depthwise layers ({len(dw)}), largest ratio to torch",
                    f"forward {dw_f.layer.name} {dw_f.fwd_ratio:.2f}×, "
                    f"forward+backward {dw_b.layer.name} {dw_b.fb_ratio:.2f}×"))
    big = [r for r in results if _is_big_3x3_s1(r.layer)]
    if big:
        rates = [(r.layer.name, r.layer.forward_flops / r.fwd_cs / 1e9) for r in big]
        worst_rate = min(v for _, v in rates)
        out.append(("3×3 stride-1 layers with ≥ 64 channels, forward GF/s ÷ NumPy GEMM GF/s",
                    ", ".join(f"{n} {v:.0f} GF/s = {v / gemm[0]:.2f}" for n, v in rates)))
    accuracy = max(max(r.fwd_err, r.grad_err) for r in everything)
    targets = [
        f"forward geomean ≤ {FWD_TARGET:g}×: {_met(g_fwd <= FWD_TARGET)}",
        f"forward+backward geomean ≤ {FWD_BWD_TARGET:g}×: {_met(g_fb <= FWD_BWD_TARGET)}",
        f"no layer above {WORST_TARGET:g}×: {_met(max(worst_f.fwd_ratio, worst_b.fb_ratio) <= WORST_TARGET)}",
    ]
    if dw:
        targets.append(f"depthwise ≤ {DEPTHWISE_TARGET:g}×: "
                       f"{_met(max(dw_f.fwd_ratio, dw_b.fb_ratio) <= DEPTHWISE_TARGET)}")
    if big:
        targets.append(f"3×3/1 ≥ 64 channels at ≥ {WINOGRAD_GEMM_TARGET:g}× GEMM GF/s: "
                       f"{_met(worst_rate >= WINOGRAD_GEMM_TARGET * gemm[0])}")
    if ("onnxruntime", "fwd") in peers:
        targets.append(f"forward geomean ahead of onnxruntime's ({g_fwd:.2f}× vs "
                       f"{peers[('onnxruntime', 'fwd')]:.2f}×): {_met(g_fwd < peers[('onnxruntime', 'fwd')])}")
    targets.append(f"accuracy ≤ {ACCURACY_TARGET:g}: {_met(accuracy <= ACCURACY_TARGET)}")
    if len(results) == len(everything) and all(r.layer.net == LARGE for r in results):
        targets = ["not evaluated: they are about the networks' layers, and only large kernels were run"]
    out.append(("targets", "; ".join(targets)))
    out.append(("float32 GEMM 2048×2048 @ 2048×2048 (median)",
                f"NumPy {gemm[0]:.0f} GFLOP/s, torch {gemm[1]:.0f} GFLOP/s"))
    out.append(("worst accuracy (max |library − torch| / max |torch|)",
                "; ".join(f"{lib} forward {max(r.errors[(lib, 'fwd')] for r in everything):.1e}"
                          + (f", gradients {max(r.errors[(lib, 'fb')] for r in everything):.1e}"
                             if "fb" in LIBRARY_PASSES[lib] else "")
                          for lib in libs if lib != "torch")))
    if compile_note:
        out.append(("convscope's compiled kernels, one-time cost (not in the timings)", compile_note))
    loads = [r.other_load for r in everything if r.other_load is not None]
    if loads:
        flagged = sum(1 for x in loads if x > LOAD_FLAG)
        out.append(("CPU used by other processes while measuring",
                    f"mean {100 * statistics.mean(loads):.1f}%, max {100 * max(loads):.1f}%"
                    + (f"; {flagged} layer(s) above {100 * LOAD_FLAG:.0f}% marked †" if flagged else "")))
    return out


def markdown(results, gemm, facts, settings, command, started, libs, method, compile_note) -> str:
    cols = header(libs)
    lines = [
        "# convscope vs torch: Conv2d on ResNet-50's and MobileNetV2's layers",
        "",
        f"- date: {started:%Y-%m-%d %H:%M %Z}".rstrip(),
        f"- command: `{command}`",
    ]
    lines += [f"- {k}: {v}" for k, v in facts]
    lines += [f"- {settings}", ""]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join("---:" if i in NUMERIC else "---" for i in range(len(cols))) + "|")
    for r in results:
        lines.append("| " + " | ".join(row(r, libs)) + " |")
    lines.append("")
    for k, v in summary(results, gemm, libs, method, compile_note):
        lines.append(f"- **{k}**: {v}")
    lines += [
        "",
        "ms: median time per call; ratio: convscope ms / torch ms (below 1: convscope is faster); "
        "GF/s: direct-convolution FLOPs (forward 2·N·C_out·H_out·W_out·C_in/groups·kH·kW, "
        "forward+backward 3×) per second; fwd err, grad err: max |convscope − torch| / max |torch| "
        "for the output and (worst of) the three gradients; ×: occurrences in the network; "
        "algorithm: convscope's choice for forward / grad_input / grad_weight (one name: all three; "
        "1x1 pointwise, dw depthwise, wino Winograd F(4×4, 3×3), fft FFT, gemm im2col); "
        "ort: onnxruntime (forward), jax: JAX under jax.jit (forward and forward+backward); "
        f"†: other processes used more than {100 * LOAD_FLAG:.0f}% of the CPU while the row was measured.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help=f"{len(QUICK)} representative layers and fewer repeats")
    ap.add_argument("--method", choices=["handover", "process"], default="handover",
                    help="'handover' (default): every library in this process, each sample after "
                         "--handover seconds of its own untimed calls; 'process': each library in its "
                         "own worker process, sampled in the same alternating rounds")
    ap.add_argument("--libraries", metavar="LIB", nargs="+", choices=LIBRARIES,
                    help="libraries to time (default: torch, convscope and those of onnxruntime and JAX "
                         "that are installed; torch and convscope always run)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="timed samples per layer, pass and library (default 5, 3 with --quick)")
    ap.add_argument("--markdown", metavar="FILE", help="also write the results as Markdown to FILE")
    ap.add_argument("--layers", metavar="NAME", nargs="+",
                    help="only these layers (names as in the first column; also rx.layer1.0.conv2, "
                         "rx.layer2.0.conv2, rx.layer3.1.conv2: ResNeXt-50's 32-group 3×3, not in the default run)")
    ap.add_argument("--handover", type=float, default=0.2, metavar="S",
                    help="untimed calls before each timed sample, seconds (default 0.2)")
    ap.add_argument("--wait-idle", type=float, default=60.0, metavar="S",
                    help="before each layer wait up to S seconds for the CPU to be idle (default 60; 0: don't)")
    ap.add_argument("--retries", type=int, default=2, metavar="N",
                    help="time a layer again, up to N times, when other processes used more than "
                         f"{100 * LOAD_FLAG:.0f}%% of the CPU meanwhile (default 2)")
    ap.add_argument("--malloc", choices=list(MALLOC_MODES), default="reuse",
                    help="'reuse' (default): glibc keeps and reuses freed memory, so no library "
                         "page-faults in steady state; 'glibc-steady': the thresholds glibc settles at "
                         "by itself (mmap 32 MiB, trim 64 MiB); 'default': leave glibc alone")
    ap.add_argument("--min-sample", type=float, default=0.02, metavar="S",
                    help="a sample repeats a call until it lasts this long (default 0.02 s)")
    ap.add_argument("--no-compile-cost", action="store_true",
                    help="do not time the compiled kernels' one-time compilation")
    args = ap.parse_args(argv)

    repeats = args.repeat or (3 if args.quick else 5)
    handover = args.handover
    names = args.layers or (QUICK if args.quick else [layer.name for layer in LAYERS])
    by_name = {layer.name: layer for layer in LAYERS + RESNEXT50}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        ap.error(f"unknown layer(s) {unknown}; known: {list(by_name)}")
    layers = [by_name[n] for n in names]
    wanted = args.libraries or LIBRARIES
    libs = [lib for lib in LIBRARIES if (lib in ("torch", "convscope") or lib in wanted) and installed(lib)]
    if "torch" not in libs:
        ap.error("torch is not installed: it is the reference the ratios are taken to")

    allocator = configure_malloc(args.malloc)
    cores = usable_cores()
    started = datetime.datetime.now().astimezone()
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + sys.argv[1:]) \
        if argv is None else "bench_conv.main(" + repr(argv) + ")"
    if args.method == "process":
        runner = Processes(libs, cores, args.malloc)
        method = ("process: each library in its own worker process, sampled in alternating rounds, "
                  f"each sample after {handover:g} s of its own untimed calls")
    else:
        runner = InProcess(libs, cores)
        method = (f"handover: all libraries in one process, sampled in alternating rounds, each sample "
                  f"after {handover:g} s of its own untimed calls")
    try:
        facts = machine_facts(cores) + [(lib, runner.facts(lib)) for lib in libs]
        missing = [lib for lib in PEERS if lib not in libs]
        if missing:
            facts.append(("not timed", ", ".join(f"{lib} ({'not installed' if not installed(lib) else 'not asked'})"
                                                 for lib in missing)))
        settings = (f"float32, {len(layers)} layers, {repeats} alternating repeats per pass and library "
                    f"(median), each sample {handover:g} s of untimed calls then ≥ {args.min_sample:g} s of "
                    f"timed calls, {allocator}")

        print(f"# {started:%Y-%m-%d %H:%M %Z}  {command}")
        for k, v in facts:
            print(f"# {k}: {v}")
        print(f"# method: {method}")
        print(f"# {settings}")
        print()
        print(text_line(header(libs), widths(libs)))
        rng = np.random.default_rng(0)
        results = []
        t_start = time.perf_counter()
        for layer in layers:
            r = bench_layer(runner, layer, repeats, handover, args.min_sample, rng, args.wait_idle, args.retries)
            results.append(r)
            print(text_line(row(r, libs), widths(libs)), flush=True)
        if args.wait_idle:
            OtherLoad(cores).wait_idle(args.wait_idle)
        gemm = gemm_gflops(runner, max(5, repeats), handover)
    finally:
        runner.close()
    compile_note = None if args.no_compile_cost else compile_cost()
    print()
    for k, v in summary(results, gemm, libs, method, compile_note):
        print(f"{k}: {v}")
    print(f"(total {time.perf_counter() - t_start:.0f} s)")

    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(markdown(results, gemm, facts, settings, command, started, libs, method, compile_note))
        print(f"Markdown written to {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
