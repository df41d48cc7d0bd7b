"""How much scratch memory one call may use, and how to split work to stay under it.

The fast paths need scratch arrays (im2col matrices, Winograd tiles, padded
copies) that grow with the batch and the image.  Before running a pass,
:mod:`convscope.algorithms` asks the implementation for an estimate of its
scratch bytes and, when that exceeds the limit, runs it on slices of the batch
(and, for a pass whose single sample is still too big, on blocks of output
rows of the padded sample), so that the peak extra memory of a call stays below
input + output + limit.

The limit is process-wide (default 256 MiB); :func:`workspace_limit` changes it
for a ``with`` block of the calling thread.  Both may be used from any thread
while others compute: a call reads the limit once, when it starts, and keeps it
to the end (a change made meanwhile applies from the next call).
"""
from __future__ import annotations

from ._setting import Setting
from .spec import check_workspace_bytes

DEFAULT_LIMIT = 256 << 20

_limit = Setting(DEFAULT_LIMIT)


def get_workspace_limit() -> int:
    """The scratch-memory limit of the calling thread, in bytes."""
    return _limit.get()


def set_workspace_limit(nbytes: int) -> int:
    """Set the scratch-memory limit (bytes) for every thread; returns the previous limit.

    >>> import convscope
    >>> previous = convscope.set_workspace_limit(64 << 20)
    >>> convscope.get_workspace_limit()
    67108864
    >>> _ = convscope.set_workspace_limit(previous)
    """
    return _limit.set(check_workspace_bytes(nbytes))


def workspace_limit(nbytes: int):
    """``with workspace_limit(bytes):`` — the limit for calls made by this thread inside the block.

    >>> import numpy as np, convscope
    >>> x = np.ones((2, 8, 16, 16), np.float32); w = np.ones((8, 8, 3, 3), np.float32)
    >>> with convscope.workspace_limit(1 << 16):
    ...     y = convscope.conv2d(x, w, padding=1)
    >>> float(y[0, 0, 5, 5])
    72.0
    """
    return _limit.override(check_workspace_bytes(nbytes))
