"""A process-wide setting with a per-thread override: the workspace limit, the precision mode."""
from __future__ import annotations

import threading


class Setting:
    """``get()`` the calling thread's value: its innermost ``override`` block's, else the process's."""

    def __init__(self, default):
        self._value = default
        self._local = threading.local()
        self._lock = threading.Lock()

    def get(self):
        return getattr(self._local, "value", self._value)

    def set(self, value):
        """Set the value for every thread (and for this thread's open block); returns the previous one."""
        with self._lock:
            previous = self.get()
            self._value = value
            if hasattr(self._local, "value"):
                self._local.value = value
        return previous

    def override(self, value):
        """The value for this thread inside a ``with`` block."""
        return _Override(self._local, value)


class _Override:
    """:meth:`Setting.override`'s block (a class rather than a generator: every call enters one)."""

    __slots__ = ("_local", "_value", "_had", "_old")

    def __init__(self, local, value):
        self._local, self._value = local, value

    def __enter__(self):
        local = self._local
        self._had = hasattr(local, "value")
        self._old = getattr(local, "value", None)
        local.value = self._value
        return self._value

    def __exit__(self, *exc):
        if self._had:
            self._local.value = self._old
        else:
            del self._local.value
        return False
