#!/usr/bin/env python
"""convscope.dask at scale: a 24000×24000 float32 image (2.3 GB) filtered on a two-worker LocalCluster.

Usage::

    python bench/bench_dask.py                 # every section, about 4 minutes on 2 cores
    python bench/bench_dask.py --size 8000     # a smaller image for the first two sections
    python bench/bench_dask.py --sections big zarr

Sections
--------
big       The image is generated chunk by chunk with ``dask.array.random`` (never whole in any
          process), filtered by a bank of 4 learned-looking 5×5 filters with reflect padding
          ('same' size) on ``LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="1.2GB")``,
          and reduced to each filter's sum and max.  Reports time, input pixels per second, the
          highest memory any worker reached, and whether every worker survived (same pids).
zarr      The same image written to a zarr store in a temporary directory, read back from disk,
          filtered by one 5×5 filter and written to a second zarr store (then both deleted).
scaling   A 12000×12000 image on 1 and on 2 workers: throughput and speed-up.
pixel     Time per output pixel on a 4000×4000 image that fits in memory: in-memory
          ``convscope.conv2d`` (1 and 2 threads) against ``convscope.dask.conv2d`` on the
          threaded scheduler and on the two-worker cluster.
overhead  The graph's cost per chunk: a 2048×2048 3×3 convolution cut into 64, 256 and 1024 chunks,
          the time to build the graph, the compute time on the threaded scheduler and on the
          cluster, the marginal cost of a chunk, and dask's own ``map_overlap`` (computing nothing)
          on the same chunks for comparison.
backward  ``conv2d_backward`` of the 5×5 bank on an 8000×8000 image on the cluster: grad_weight and
          grad_bias reduced by the tree sum, grad_input reduced to its sum.
volume    ``convscope.dask.conv3d`` of a (1, 4, 128, 256, 256) float32 volume chunked in depth (16 slices
          a chunk), 8 filters 3×3×3 replicate 'same', on the threaded scheduler with 1 and 2 workers,
          against in-memory ``convscope.conv3d`` with 1 and 2 threads: time per voxel, the halo slices'
          share of the input, and the largest difference from the in-memory result.

Every figure is one run on whatever else the machine is doing: timings on a shared machine are noisy.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import dask  # noqa: E402
import dask.array as da  # noqa: E402
import distributed  # noqa: E402

import convscope  # noqa: E402
import convscope.dask as cdask  # noqa: E402

MEMORY_LIMIT = "1.2GB"
WORKSPACE = 128 << 20
SECTIONS = ("big", "zarr", "scaling", "pixel", "overhead", "backward", "volume")


def filter_bank(out_channels: int, k: int = 5, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((out_channels, 1, k, k)) / k).astype(np.float32)
    return w, rng.standard_normal(out_channels).astype(np.float32)


def image(size: int, chunk: int, seed: int = 0):
    """A (1, 1, size, size) float32 dask array, each chunk drawn by its own task."""
    return da.random.default_rng(seed).random((1, 1, size, size), chunks=(1, 1, chunk, chunk), dtype=np.float32)


@contextlib.contextmanager
def cluster(n_workers: int):
    with distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                  memory_limit=MEMORY_LIMIT, silence_logs=logging.ERROR,
                                  dashboard_address=None) as c, distributed.Client(c) as client:
        yield client


def _cpu_seconds() -> float:
    import psutil

    t = psutil.Process().cpu_times()
    return t.user + t.system


class MemoryWatch:
    """The highest process memory of each worker, from the scheduler's heartbeats (every 0.25 s),
    and the CPU seconds the workers used (which other work on the machine does not inflate much)."""

    def __init__(self, client):
        self.client, self.peak, self._stop = client, {}, threading.Event()
        self.pids = self._pids()
        self._cpu = sum(client.run(_cpu_seconds).values())
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _pids(self):
        return {a: w.get("pid") for a, w in self.client.scheduler_info()["workers"].items()}

    def _run(self):
        while not self._stop.wait(0.25):
            for addr, info in self.client.scheduler_info()["workers"].items():
                self.peak[addr] = max(self.peak.get(addr, 0), info["metrics"]["memory"])

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.survived = self._pids() == self.pids
        self.cpu = sum(self.client.run(_cpu_seconds).values()) - self._cpu

    def report(self) -> str:
        peak = max(self.peak.values()) if self.peak else float("nan")
        return (f"workers' CPU {self.cpu:.1f} s; highest worker memory {peak / 1e9:.2f} GB of {MEMORY_LIMIT}; "
                f"workers {'all survived' if self.survived else 'RESTARTED (out of memory?)'}")


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def best(fn, repeat: int = 3) -> float:
    """The shortest of ``repeat`` timings (the least disturbed by other work on the machine)."""
    return min(timed(fn)[1] for _ in range(repeat))


def section_big(size, chunk):
    w, b = filter_bank(4)
    with cluster(2) as client, MemoryWatch(client) as watch:
        x = image(size, chunk)
        y = cdask.conv2d(x, w, b, padding="same", padding_mode="reflect", workspace_limit=WORKSPACE)
        (total, peak), dt = timed(lambda: dask.compute(y.sum(axis=(0, 2, 3)), y.max(axis=(0, 2, 3))))
    px = size * size
    print(f"big: {size}×{size} float32 ({px * 4 / 1e9:.1f} GB), chunks {chunk}², {x.npartitions}"
          f" chunks, 4 filters 5×5 reflect 'same': {dt:.1f} s, {px / dt / 1e6:.1f} Mpx/s "
          f"({4 * px / dt / 1e6:.1f} M outputs/s); {watch.report()}")
    print(f"     per-filter mean {[round(float(v), 4) for v in total / px]}, max {[round(float(v), 3) for v in peak]}")


def section_zarr(size, chunk):
    w, b = filter_bank(1)
    root = tempfile.mkdtemp(prefix="convscope-bench-")
    try:
        with cluster(2) as client, MemoryWatch(client) as watch:
            src, dst = os.path.join(root, "input.zarr"), os.path.join(root, "output.zarr")
            _, t_write = timed(lambda: image(size, chunk).to_zarr(src, compressors=None))
            x = da.from_zarr(src)
            y = cdask.conv2d(x, w, b, padding="same", padding_mode="reflect", workspace_limit=WORKSPACE)
            _, t_conv = timed(lambda: y.to_zarr(dst, compressors=None))
            check = da.from_zarr(dst)[0, 0, :64, :64].compute()
            expected = convscope.conv2d(x[:, :, :70, :70].compute(), w, b, padding="same",
                                        padding_mode="reflect")[0, 0, :64, :64]
        disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    px = size * size
    print(f"zarr: write the input {t_write:.1f} s; read, filter (1 filter 5×5 reflect), write: {t_conv:.1f} s, "
          f"{px / t_conv / 1e6:.1f} Mpx/s; {disk / 1e9:.1f} GB on disk (deleted); corner equals in-memory: "
          f"{bool(np.allclose(check, expected, rtol=1e-5, atol=1e-5))}; {watch.report()}")


def section_scaling(size, chunk):
    w, b = filter_bank(4)
    rates = {}
    for n in (1, 2):
        with cluster(n) as client, MemoryWatch(client) as watch:
            y = cdask.conv2d(image(size, chunk), w, b, padding="same", padding_mode="reflect",
                             workspace_limit=WORKSPACE)
            _, dt = timed(lambda: y.sum().compute())
        rates[n] = size * size / dt / 1e6
        print(f"scaling: {size}² on {n} worker{'s' * (n > 1)}: {dt:.1f} s, {rates[n]:.1f} Mpx/s; {watch.report()}")
    print(f"scaling: speed-up 2 workers / 1 worker = {rates[2] / rates[1]:.2f}")


def section_pixel(size=4000, chunk=2000):
    """Wall and CPU time per pixel: in memory against dask (each the best of 3 runs)."""
    w, b = filter_bank(4)
    x = np.random.default_rng(0).random((1, 1, size, size), dtype=np.float32)
    kwargs = dict(padding="same", padding_mode="reflect")
    px = size * size
    rows = []

    def local(fn):
        runs = []
        for _ in range(3):
            c, (_, dt) = time.process_time(), timed(fn)
            runs.append((dt, time.process_time() - c))
        return min(r[0] for r in runs), min(r[1] for r in runs)

    for threads in (1, 2):
        previous = convscope.set_num_threads(threads)
        with convscope.workspace_limit(WORKSPACE):
            convscope.conv2d(x[:, :, :500, :500], w, b, **kwargs)
            rows.append((f"in-memory conv2d, {threads} thread{'s' * (threads > 1)}",
                         *local(lambda: convscope.conv2d(x, w, b, **kwargs))))
        convscope.set_num_threads(previous)
    y = cdask.conv2d(da.from_array(x, chunks=(1, 1, chunk, chunk)), w, b, workspace_limit=WORKSPACE, **kwargs)
    rows.append((f"dask threaded scheduler, 2 threads, chunks {chunk}²",
                 *local(lambda: y.compute(scheduler="threads", num_workers=2))))
    with cluster(2) as client:
        xd = da.from_delayed(client.scatter(x), shape=x.shape, dtype=x.dtype).rechunk((1, 1, chunk, chunk))
        total = cdask.conv2d(xd, w, b, workspace_limit=WORKSPACE, **kwargs).sum()
        client.compute(total, sync=True)                                # warm the workers (numba, imports)
        runs = []
        for _ in range(3):
            with MemoryWatch(client) as watch:
                _, dt = timed(lambda: client.compute(total, sync=True))
            runs.append((dt, watch.cpu))
        rows.append((f"dask LocalCluster, 2 workers, chunks {chunk}², reduced to a sum",
                     min(r[0] for r in runs), min(r[1] for r in runs)))
    for label, dt, cpu in rows:
        print(f"pixel: {size}² 4 filters 5×5: {label}: {dt:.2f} s wall ({dt / px * 1e9:.1f} ns per pixel), "
              f"{cpu:.2f} CPU s ({cpu / px * 1e9:.1f} ns per pixel)")


def section_overhead(size=2048):
    """The marginal cost of a chunk: the same image and kernel cut into more and more chunks."""
    w, b = filter_bank(1, k=3)
    rows = []
    with cluster(2) as client:
        for chunk in (256, 128, 64):
            n = (size // chunk) ** 2
            x = image(size, chunk)
            y, t_build = timed(lambda: cdask.conv2d(x, w, b, padding=1))
            total = y.sum()
            tasks = len(dict(total.__dask_graph__()))
            total.compute(scheduler="threads")
            t_threads = best(lambda: total.compute(scheduler="threads", num_workers=2))
            client.compute(total, sync=True)
            t_cluster = best(lambda: client.compute(total, sync=True))
            rows.append((n, t_threads, t_cluster))
            print(f"overhead: {size}² 3×3 on {n} chunks of {chunk}² ({tasks} tasks with the random chunks, "
                  f"halo pieces and the sum): graph built in {t_build * 1e3:.0f} ms ({t_build / n * 1e6:.0f} µs "
                  f"per chunk); computed in {t_threads:.2f} s (threaded), {t_cluster:.2f} s (cluster), "
                  f"{t_cluster / tasks * 1e3:.2f} ms per task")
            # the same chunks through dask's own halo exchange, computing nothing: the scheduler's share
            same = x.map_overlap(lambda block: block, depth={2: 1, 3: 1}, boundary="reflect").sum()
            tasks = len(dict(same.__dask_graph__()))
            client.compute(same, sync=True)
            t_same = best(lambda: client.compute(same, sync=True))
            print(f"overhead:   map_overlap(identity, depth 1) on the same chunks: {tasks} tasks, "
                  f"{t_same:.2f} s (cluster), {t_same / tasks * 1e3:.2f} ms per task")
    (n0, a0, c0), (n1, a1, c1) = rows[0], rows[-1]
    print(f"overhead: marginal cost of a chunk: {(a1 - a0) / (n1 - n0) * 1e3:.2f} ms on the threaded scheduler, "
          f"{(c1 - c0) / (n1 - n0) * 1e3:.2f} ms on the cluster")


def section_backward(size, chunk):
    w, _ = filter_bank(4)
    with cluster(2) as client, MemoryWatch(client) as watch:
        x = image(size, chunk)
        gy = image(size, chunk, seed=2).repeat(4, axis=1)
        grads = cdask.conv2d_backward(gy, x, w, padding="same", padding_mode="reflect", workspace_limit=WORKSPACE)
        (dx_sum, dw, db), dt = timed(lambda: dask.compute(grads.input.sum(), grads.weight, grads.bias))
    print(f"backward: {size}² 4 filters 5×5 reflect: all three gradients in {dt:.1f} s, "
          f"{size * size / dt / 1e6:.1f} Mpx/s; grad_weight {dw.shape}, grad_bias {np.round(db, 1).tolist()}; "
          f"{watch.report()}")


def section_volume(depth=128, side=256, chunk=16):
    """A volume chunked in depth: dask's conv3d against in-memory conv3d (best of 3 each)."""
    rng = np.random.default_rng(0)
    x = rng.random((1, 4, depth, side, side), dtype=np.float32)
    w = (rng.standard_normal((8, 4, 3, 3, 3)) / 10).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    kwargs = dict(padding="same", padding_mode="replicate")
    voxels = depth * side * side
    rows = []
    with convscope.workspace_limit(WORKSPACE):
        for threads in (1, 2):
            previous = convscope.set_num_threads(threads)
            expected = convscope.conv3d(x, w, b, **kwargs)
            rows.append((f"in-memory conv3d, {threads} thread{'s' * (threads > 1)}",
                         best(lambda: convscope.conv3d(x, w, b, **kwargs))))
            convscope.set_num_threads(previous)
    y = cdask.conv3d(da.from_array(x, chunks=(1, 4, chunk, side, side)), w, b, workspace_limit=WORKSPACE, **kwargs)
    pieces = [k for k in dict(y.__dask_graph__()) if isinstance(k, tuple) and k[0].startswith("conv3d-halo")]
    halo = sum((d1 - d0) * (h1 - h0) * (w1 - w0) for d0, d1, h0, h1, w0, w1 in (k[-6:] for k in pieces))
    for workers in (1, 2):
        got = y.compute(scheduler="threads", num_workers=workers)
        rows.append((f"dask conv3d, threaded scheduler, {workers} worker{'s' * (workers > 1)}, "
                     f"{depth // chunk} chunks of {chunk} slices",
                     best(lambda: y.compute(scheduler="threads", num_workers=workers))))
    error = float(np.abs(got - expected).max() / np.abs(expected).max())
    print(f"volume: (1, 4, {depth}, {side}, {side}) float32, 8 filters 3×3×3 replicate 'same'; {len(pieces)} halo "
          f"pieces, {halo / voxels:.1%} of the input's voxels; largest difference from in memory {error:.1e} "
          f"of the output's magnitude")
    for label, dt in rows:
        print(f"volume: {label}: {dt:.2f} s ({dt / voxels * 1e9:.1f} ns per output voxel)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=24000, help="image side for big and zarr (default 24000)")
    parser.add_argument("--chunk", type=int, default=3000, help="chunk side (default 3000)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    args = parser.parse_args(argv)
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    print(f"CPU {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, numpy {np.__version__}, "
          f"dask {dask.__version__}, distributed {distributed.__version__}, convscope {convscope.__version__}")
    for name in args.sections:
        if name == "big":
            section_big(args.size, args.chunk)
        elif name == "zarr":
            section_zarr(args.size, args.chunk)
        elif name == "scaling":
            section_scaling(12000, args.chunk)
        elif name == "pixel":
            section_pixel()
        elif name == "overhead":
            section_overhead()
        elif name == "backward":
            section_backward(8000, 2000)
        else:
            section_volume()


if __name__ == "__main__":
    main()
