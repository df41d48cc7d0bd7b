"""Tuning for the machine at hand: time the candidates of a configuration once, remember the winner.

Off by default.  :func:`set_tuning` (or ``CONVSCOPE_TUNING=1`` in the environment) turns it on:
the first time the planner sees a configuration (spec, shapes, compute dtype) it times, for
each pass, every implementation that can serve it (:func:`convscope.planner.candidates`: all but
the reference loops) on random arrays of the call's shapes, one warm-up call (it also
compiles the kernels) and then the best of ``REPEAT`` calls, and keeps the fastest per pass.
From then on that configuration runs its winners, and :func:`convscope.plan` marks the
choice ``measured`` (with the times) instead of ``table``.

The winners are kept in memory and, when a file is given (``set_tuning(True, path=...)`` or
``CONVSCOPE_TUNING_FILE``), in a JSON file (never a pickle), under a key naming this machine's
CPU model, its core count and the versions of convscope, NumPy, numba and SciPy: one file
can hold the tables of several machines, and a machine reads only its own.  Every new
measurement is merged into the file and written atomically.  All of it is thread-safe:
a configuration is measured once even when several threads ask for it at the same time.
"""
from __future__ import annotations

import json
import os
import platform
import threading
import time

import numpy as np

REPEAT = 3
FORMAT = "convscope-tuning"
_TRUE = ("1", "true", "yes", "on")

_lock = threading.RLock()           # guards _state and the file
_measuring = threading.Lock()       # one measurement at a time
_state = {
    "on": os.environ.get("CONVSCOPE_TUNING", "").strip().lower() in _TRUE,
    "path": os.environ.get("CONVSCOPE_TUNING_FILE") or None,
    "table": None,                  # {config key: {pass: {"algorithm": name, "ms": {name: ms}}}}, loaded lazily
    "version": 0,                   # counts set_tuning and clear calls: the planner's cache key (state())
}


def get_tuning() -> bool:
    """Whether tuning is on."""
    return _state["on"]


def state() -> tuple:
    """(on, path, version): changes whenever tuning is turned on or off, given another file, or cleared."""
    return _state["on"], _state["path"], _state["version"]


def set_tuning(enabled: bool, path=None) -> bool:
    """Turn tuning on or off; returns the previous setting.

    ``path`` (str or path-like, or None for memory only) is the JSON file the measurements are
    read from and merged into.  A file that is not a convscope tuning file raises ValueError.

    >>> import convscope
    >>> previous = convscope.set_tuning(False)
    >>> convscope.get_tuning()
    False
    >>> _ = convscope.set_tuning(previous)
    """
    if not isinstance(enabled, (bool, np.bool_)):
        raise TypeError(f"set_tuning: enabled must be True or False, got {enabled!r}")
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"set_tuning: path must be a str, a path-like or None, got {type(path).__name__}")
    with _lock:
        previous = _state["on"]
        path = None if path is None else os.fspath(path)
        if path is not None:
            _read(path)                                 # fails here, before anything is changed
        if path != _state["path"]:
            _state["table"] = None
        _state["on"], _state["path"] = bool(enabled), path
        _state["version"] += 1
        return previous


def clear() -> None:
    """Forget the measurements held in memory (the file, if any, is read again when needed)."""
    with _lock:
        _state["table"] = None
        _state["version"] += 1


def machine() -> str:
    """The key of this machine's measurements: CPU model, cores and library versions."""
    from importlib import metadata

    from . import __version__
    from .threads import get_num_threads

    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "none"

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return (f"{cpu}; {get_num_threads()} threads; convscope {__version__}; numpy {np.__version__}; "
            f"numba {version('numba')}; scipy {version('scipy')}")


def key(spec, shape, dtype) -> str:
    """The configuration a measurement stands for, as a JSON-friendly string."""
    dtype = np.dtype(np.float32 if dtype is None else dtype)
    return (f"k={spec.kernel_size} s={spec.stride} p={spec.padding} d={spec.dilation} g={spec.groups} "
            f"{spec.padding_mode} N={shape.N} C={shape.C} H={shape.H} W={shape.W} "
            f"O={shape.out_channels} {dtype.name}")


def _read(path) -> dict:
    """{machine: {config: entry}} from ``path`` ({} when the file does not exist)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise ValueError(f"tuning file {path!r} cannot be read as JSON: {err}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("machines"), dict):
        raise ValueError(f"tuning file {path!r} is not a convscope tuning file "
                         f"(expected a JSON object with \"format\": {FORMAT!r} and \"machines\")")
    return data["machines"]


def _write(path, entries: dict) -> None:
    """Merge this machine's ``entries`` into the file, atomically."""
    machines = _read(path)
    mine = machines.setdefault(machine(), {})
    mine.update(entries)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"format": FORMAT, "machines": machines}, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _table() -> dict:
    with _lock:
        if _state["table"] is None:
            path = _state["path"]
            _state["table"] = dict(_read(path).get(machine(), {})) if path else {}
        return _state["table"]


def _valid(entry, names) -> bool:
    from .planner import PASSES

    return isinstance(entry, dict) and all(
        isinstance(entry.get(p), dict) and entry[p].get("algorithm") in names for p in PASSES)


def measured(spec, shape, dtype=None) -> dict | None:
    """{pass: {"algorithm": winner, "ms": {candidate: best ms}}} for this configuration, measuring it
    the first time; None when there is nothing to choose from."""
    from .planner import candidates

    names = candidates(spec, shape)
    if not names:
        return None
    k = key(spec, shape, dtype)
    entry = _table().get(k)
    if _valid(entry, names):
        return entry
    with _measuring:
        entry = _table().get(k)
        if _valid(entry, names):
            return entry
        entry = _measure(spec, shape, np.dtype(np.float32 if dtype is None else dtype), names)
        with _lock:
            _table()[k] = entry
            if _state["path"]:
                _write(_state["path"], {k: entry})
    return entry


def reason(entry, pass_) -> str:
    times = ", ".join(f"{name} {ms:.3g} ms" for name, ms in sorted(entry[pass_]["ms"].items(), key=lambda t: t[1]))
    return f"measured on this machine: {times}"


def _arrays(spec, shape, dtype):
    rng = np.random.default_rng(0)
    kH, kW = spec.kernel_size
    x = rng.standard_normal((shape.N, shape.C, shape.H, shape.W)).astype(dtype)
    w = rng.standard_normal((shape.out_channels, shape.in_per_group, kH, kW)).astype(dtype)
    b = rng.standard_normal(shape.out_channels).astype(dtype)
    g = rng.standard_normal((shape.N, shape.out_channels, shape.H_out, shape.W_out)).astype(dtype)
    return x, w, b, g


def _best_ms(run) -> float:
    run()                                                   # warm-up (and compilation)
    best = float("inf")
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def _measure(spec, shape, dtype, names) -> dict:
    from . import algorithms
    from .planner import PASSES

    x, w, b, g = _arrays(spec, shape, dtype)
    runs = {
        "forward": lambda name: algorithms.run_forward(name, x, w, b, spec, shape),
        "grad_input": lambda name: algorithms.run_backward((name, name), g, None, w, spec, shape, (True, False)),
        "grad_weight": lambda name: algorithms.run_backward((name, name), g, x, None, spec, shape, (False, True)),
    }
    entry = {}
    for pass_ in PASSES:
        times = {name: _best_ms(lambda: runs[pass_](name)) for name in names}
        entry[pass_] = {"algorithm": min(times, key=times.get), "ms": times}
    return entry
