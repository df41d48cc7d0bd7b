"""Writing frames: GIF (Pillow), MP4 (ffmpeg), and the output for Jupyter (``image/gif``)."""
from __future__ import annotations

import io
import os
import shutil
import subprocess

import numpy as np

from .draw import PALETTE, palette_image

HOLD_LAST = 3          # the last frame stays this many frame durations
HTML_MAX_BYTES = 2_000_000  # larger GIFs are not inlined; the notebook shows the first frame


def durations(count: int, fps: float) -> list[int]:
    """Milliseconds per frame (GIF counts in hundredths of a second), the last one held longer."""
    ms = max(10 * round(100 / fps), 20)
    return [ms] * (count - 1) + [ms * HOLD_LAST]


def _images(indices: list[np.ndarray]):
    from PIL import Image

    pal = palette_image()
    images = []
    for ix in indices:
        img = Image.fromarray(ix, "P")
        img.putpalette(pal.getpalette())
        images.append(img)
    return images


def write_gif(target, indices: list[np.ndarray], fps: float) -> None:
    """Write the frames (palette indices) as a looping GIF to a path or a binary file object."""
    images = _images(indices)
    images[0].save(target, format="GIF", save_all=True, append_images=images[1:], duration=durations(len(images), fps),
                   loop=0, optimize=True)


def gif_bytes(indices: list[np.ndarray], fps: float) -> bytes:
    buffer = io.BytesIO()
    write_gif(buffer, indices, fps)
    return buffer.getvalue()


def png_bytes(frame: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame, "RGB").save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def ffmpeg_path() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        raise RuntimeError("writing .mp4 needs ffmpeg, which was not found on PATH "
                           "(install it, e.g. `apt-get install ffmpeg`, or save as .gif)")
    return path


def write_mp4(path: str, indices: list[np.ndarray], fps: float) -> None:
    """Pipe the frames as raw RGB to ffmpeg: one video frame per frame (the container's default codec,
    H.264 when ffmpeg has it; yuv420p, which needs the even sizes the layout gives)."""
    ffmpeg = ffmpeg_path()
    with open(path, "wb"):  # a path we cannot write fails here, as for a GIF, with OSError
        pass
    height, width = indices[0].shape
    cmd = [ffmpeg, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
           "-r", f"{fps:g}", "-i", "-", "-pix_fmt", "yuv420p", "-movflags", "+faststart", os.fspath(path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for ix in indices:
            proc.stdin.write(PALETTE[ix].tobytes())
        proc.stdin.close()
    except BrokenPipeError:
        pass
    err = proc.stderr.read().decode(errors="replace").strip()
    if proc.wait() != 0:
        last = err.splitlines()[-1] if err else f"exit status {proc.returncode}"
        raise RuntimeError(f"ffmpeg could not write {os.fspath(path)!r}: {last}")


def mimebundle(indices: list[np.ndarray], fps: float, first_frame: np.ndarray, note: str) -> dict:
    """Jupyter's output of an animation: ``image/gif`` (the GIF's bytes) and a ``text/plain`` line that
    says how large it is; above :data:`HTML_MAX_BYTES`, ``image/png`` of the first frame instead."""
    data = gif_bytes(indices, fps)
    size = f"{len(data) / 1e6:.1f} MB" if len(data) >= 1e6 else f"{len(data) / 1e3:.0f} kB"
    if len(data) <= HTML_MAX_BYTES:
        return {"image/gif": data, "text/plain": f"{note} (GIF, {size})"}
    return {"image/png": png_bytes(first_frame),
            "text/plain": f"{note}: the GIF is {size}, too large to show inline; the first frame is shown. "
                          "Use .save('animation.gif') to write it."}
