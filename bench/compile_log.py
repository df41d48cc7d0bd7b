"""A pytest plugin that logs every numba compilation: seconds, kernel and argument types.

Run the tests with the kernels compiled from nothing, into an empty cache, and this plugin loaded::

    NUMBA_CACHE_DIR=$(mktemp -d) PYTHONPATH=bench python -m pytest -p compile_log

Each process (each pytest-xdist worker) writes ``compile_log_<worker>.tsv`` into
``$CONVSCOPE_COMPILE_LOG`` (default: the current directory): one line per compilation, longest
first, ``seconds<TAB>module.function<TAB>argument types``.  A kernel's helpers compile inside it,
so their lines are counted again in the kernel's.
"""
from __future__ import annotations

import os
import time

_rows: list = []


def pytest_configure(config):
    from numba.core import event

    class _Listener(event.Listener):
        def __init__(self):
            self.started = {}

        def on_start(self, ev):
            self.started[id(ev.data["dispatcher"]), str(ev.data["args"])] = time.perf_counter()

        def on_end(self, ev):
            key = (id(ev.data["dispatcher"]), str(ev.data["args"]))
            t0 = self.started.pop(key, None)
            if t0 is not None:
                fn = ev.data["dispatcher"].py_func
                _rows.append((time.perf_counter() - t0, f"{fn.__module__}.{fn.__name__}", key[1]))

    event.register("numba:compile", _Listener())


def pytest_unconfigure(config):
    if not _rows:
        return
    folder = os.environ.get("CONVSCOPE_COMPILE_LOG", ".")
    name = f"compile_log_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.tsv"
    with open(os.path.join(folder, name), "w") as f:
        for seconds, kernel, args in sorted(_rows, reverse=True):
            f.write(f"{seconds:.2f}\t{kernel}\t{args}\n")
