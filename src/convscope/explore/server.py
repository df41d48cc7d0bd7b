"""The explore page and its local server.

Routes (everything else is 404, other methods 405):

* ``GET /``: the page (HTML, CSS and JavaScript in one response; it loads nothing else);
* ``GET /api/layer?input=3x6x6&kernel_size=3&padding=1&...``: :func:`~convscope.explore.layer_data`
  as JSON (parameters in :data:`PARAMETERS`), with a ``key`` naming the layer for ``/api/element``;
* ``POST /api/layer`` with a JSON object of the same parameters, plus ``"file"`` (base64 of a
  ``.npy``, PNG or JPEG file, the page's file picker) and ``"file_name"``; a ``.npy`` is read with
  ``allow_pickle=False`` after its header is checked against its size, an image with Pillow
  after its size is checked;
* ``GET /api/element?key=K&kind=output&at=0,3,4``: how one element of layer ``K`` is made
  (:func:`~convscope.explore.element`: one ``explain`` or ``explain_grad`` call);
* ``GET /api/health``: ``{"ok": true}``.

A bad parameter or an invalid combination answers 400 with ``{"error": message}``, the message
being the library's own.  The server binds to a loopback address only, answers only requests
whose ``Host`` is that address (or ``localhost``) with its port (a guard against DNS rebinding),
refuses cross-site requests, caps the URL and the body, checks a request against the size
bounds before it waits for the build lock (one layer is built at a time), serves at most
:data:`MAX_CONNECTIONS` connections at once (more are answered 503 at once), and closes a
connection that is silent for :data:`SOCKET_TIMEOUT` seconds or has not sent its request within
:data:`REQUEST_DEADLINE` seconds.
"""
from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import json
import os
import secrets
import shlex
import signal
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from .data import (COLORMAP, GRAD_OUTPUTS, IMAGES, KERNELS, KINDS, LIMITS, MAX_BYTES, MAX_TERMS, build, element,
                   layer_data, prepare, public, read_file)

MAX_QUERY = 2048          # characters of a query string
MAX_BODY = 24 << 20       # bytes of a POST body (a 3×1024×1024 float32 .npy is 12 MiB, 16 MiB in base64)
BUILD_WAIT = 30           # seconds a request waits for the build before it is answered 503
MAX_CONNECTIONS = 16      # connections served at once (each has a thread); more are answered 503
SOCKET_TIMEOUT = 10       # seconds a connection may stay silent
REQUEST_DEADLINE = 20     # seconds a client has to send its whole request (headers and body)
KEPT_LAYERS = 4           # layers the server keeps for /api/element (the latest ones)
PARAMETERS = ("input", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "padding_mode",
              "bias", "seed", "integers", "grad_output", "kernel", "image", "transposed", "output_padding")
_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class ParameterError(ValueError):
    """A request parameter that cannot be read (answered 400)."""


# --------------------------------------------------------------------------- parameters


def _text(value, name: str) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list) and 0 < len(value) <= LIMITS["out_channels"] and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return ",".join(repr(v) for v in value)
    if not isinstance(value, str):
        raise ParameterError(f"{name} must be a string or a number, got {type(value).__name__}")
    limit = 8000 if name == "kernel" else 64
    if len(value) > limit:
        raise ParameterError(f"{name} must be at most {limit} characters, got {len(value)}")
    return value.strip()


def is_ascii_int(text: str) -> bool:
    """``text`` is an integer written with ASCII digits (``"²"``, ``"٣"`` are not)."""
    digits = text[1:] if text.startswith("-") else text
    return 0 < len(digits) <= 12 and digits.isascii() and digits.isdecimal()


def _int(text: str, name: str) -> int:
    if not is_ascii_int(text):
        raise ParameterError(f"{name} must be an integer, got {text!r}")
    return int(text)


def _pair(text: str, name: str):
    parts = text.replace("x", ",").split(",")
    message = f"{name} must be an integer or two (like 3,2), got {text!r}"
    if len(parts) not in (1, 2):
        raise ParameterError(message)
    try:
        values = [_int(p.strip(), name) for p in parts]
    except ParameterError:
        raise ParameterError(message) from None
    return values[0] if len(values) == 1 else tuple(values)


def _flag(text: str, name: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ParameterError(f"{name} must be true or false, got {text!r}")


def _bias(text: str):
    if text.lower() in ("", "none", "0", "false", "off"):
        return False
    if text.lower() in ("random", "1", "true", "on"):
        return True
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ParameterError(f"bias must be 'none', 'random' or numbers separated by ',', got {text!r}") from None


def parse_parameters(items) -> dict:
    """Keyword arguments of :func:`layer_data` from ``(name, value)`` pairs (a query or a JSON object).

    Values are strings (or, from JSON, numbers, booleans and short lists of numbers); every name
    must be one of :data:`PARAMETERS` and appear once.
    """
    seen: dict[str, str] = {}
    for name, value in items:
        if name not in PARAMETERS:
            raise ParameterError(f"unknown parameter {name[:40]!r}; the parameters are {', '.join(PARAMETERS)}")
        if name in seen:
            raise ParameterError(f"parameter {name!r} is given twice")
        seen[name] = _text(value, name)
    kwargs: dict = {}
    if "input" in seen:
        parts = seen["input"].split("x")
        kwargs["input_shape"] = tuple(_int(p.strip(), "input") for p in parts)
        if len(parts) not in (2, 3, 4):
            raise ParameterError(f"input must be HxW, CxHxW or 1xCxHxW, got {seen['input']!r}")
    for name in ("out_channels", "groups", "seed"):
        if name in seen:
            kwargs[name] = _int(seen[name], name)
    for name in ("kernel_size", "stride", "dilation", "output_padding"):
        if name in seen:
            kwargs[name] = _pair(seen[name], name)
    if "padding" in seen:
        text = seen["padding"]
        kwargs["padding"] = text if text in ("same", "valid") else _pair(text, "padding")
    if "padding_mode" in seen:
        kwargs["padding_mode"] = seen["padding_mode"]
    if "bias" in seen:
        kwargs["bias"] = _bias(seen["bias"])
    if "integers" in seen:
        kwargs["integers"] = _flag(seen["integers"], "integers")
    if "transposed" in seen:
        kwargs["transposed"] = _flag(seen["transposed"], "transposed")
    if "grad_output" in seen:
        if seen["grad_output"] not in GRAD_OUTPUTS:
            raise ParameterError(f"grad_output must be 'ones' or 'random', got {seen['grad_output']!r}")
        kwargs["grad_output"] = seen["grad_output"]
    if seen.get("kernel", "random") not in ("", "random"):
        kwargs["kernel"] = seen["kernel"]
    if seen.get("image", "") != "":
        if seen["image"] not in IMAGES:
            raise ParameterError(f"image must be one of {', '.join(IMAGES)}, got {seen['image']!r}")
        kwargs["image"] = seen["image"]
    return kwargs


def load_npy(data: bytes, name: str = "npy") -> np.ndarray:
    """An array from the bytes of a ``.npy`` file (no pickles; the header is checked first)."""
    try:
        return read_file(data, name)
    except ValueError as exc:
        raise ParameterError(str(exc)) from None


def npy_bytes(x: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(x), allow_pickle=False)
    return buffer.getvalue()


# --------------------------------------------------------------------------- the page


def _template() -> str:
    return resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")


def command_line(config: dict, input_file: str | None = None) -> str:
    """The ``convscope explore`` command that shows the configuration ``config`` (a data dict's ``config``)."""
    def pair(v):
        return str(v[0]) if v[0] == v[1] else f"{v[0]}x{v[1]}"

    C, H, W = config["input_shape"]
    args = ["convscope", "explore"]
    if config.get("image"):
        args += ["--image", config["image"]]
    elif config["input_given"]:
        args += ["--input-file", input_file or config.get("input_name") or "X.npy"]
    else:
        args += ["--input", f"{H}x{W}" if C == 1 else f"{C}x{H}x{W}", "--seed", str(config["seed"])]
        if config["integers"]:
            args.append("--integers")
    if config.get("kernel_name"):
        args += ["--preset", config["kernel_name"]]
    elif config.get("kernel_values"):
        args += ["--kernel-values", "; ".join(" ".join(f"{v:g}" for v in row) for row in config["kernel_values"])]
    else:
        args += ["-k", pair(config["kernel_size"])]
    if config["out_channels"] != 1:
        args += ["--out-channels", str(config["out_channels"])]
    if not config["bias"]:
        args.append("--no-bias")
    elif config.get("bias_given"):
        args += ["--bias", ",".join(f"{v:g}" for v in config["bias_given"])]
    padding = config["padding"]
    for flag, value, default in (("-s", pair(config["stride"]), "1"),
                                 ("-p", padding if isinstance(padding, str) else
                                  str(padding) if isinstance(padding, int) else pair(padding), "0"),
                                 ("-d", pair(config["dilation"]), "1"), ("-g", str(config["groups"]), "1")):
        if value != default:
            args += [flag, value]
    if config["padding_mode"] != "zeros":
        args += ["--padding-mode", config["padding_mode"]]
    if config.get("transposed"):
        args.append("--transposed")
        if any(config["output_padding"]):
            args += ["--output-padding", pair(config["output_padding"])]
    if config["grad_output"] != "ones":
        args += ["--grad-output", config["grad_output"]]
    return shlex.join(args)


def _script_json(value) -> str:
    """JSON safe inside a <script> element ('<' escaped, so no '</script>' can end it)."""
    return (json.dumps(value, separators=(",", ":"), allow_nan=False)
            .replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def page_html(data: dict | None = None, *, static: bool = False, npy: bytes | None = None,
              npy_name: str | None = None, error: str | None = None, key: str | None = None) -> str:
    """The page as one HTML document.

    ``data`` (from :func:`layer_data`) is embedded and shown at once.  ``static=True`` makes the
    snapshot of :func:`write_page`: controls read-only, with a hint naming the command that changes
    them; otherwise the page asks its server for new data when a control changes, sending ``npy``
    (the bytes of the input's ``.npy`` file, when the input came from one) along.
    """
    boot = {
        "mode": "static" if static else "server",
        "data": None if data is None else public(data),
        "key": key,
        "kernels": KERNELS,
        "images": {name: what for name, (_, what) in IMAGES.items()},
        "colormap": COLORMAP,
        "error": error,
        "npy": None if npy is None else base64.b64encode(npy).decode("ascii"),
        "npy_name": npy_name,
        "command": (command_line(data["config"], npy_name)
                    if data is not None and not data["config"].get("weight_given") else None),
        "max_body": MAX_BODY,
        "limits": dict(LIMITS, bytes=MAX_BYTES, terms=MAX_TERMS),
    }
    return _template().replace("__CONVSCOPE_BOOT__", _script_json(boot), 1)


def write_page(path, x=None, *, input_file: str | None = None, **config) -> str:
    """Write the page for one configuration as a self-contained HTML file; return ``path``.

    ``x`` and ``config`` are :func:`layer_data`'s arguments (``input_file``: the name of the file
    ``x`` came from, for the page's hint).  Every element's explanation is precomputed and
    embedded, so the file works opened from disk (``file://``), with no server and no network;
    its controls are read-only, and a hint names the ``convscope explore`` command that shows
    the same layer with working controls.

    >>> import os, tempfile
    >>> path = write_page(os.path.join(tempfile.mkdtemp(), "conv.html"), input_shape=(4, 4), kernel_size=2)
    >>> "convscope explore" in open(path, encoding="utf-8").read()
    True
    """
    if x is not None and input_file is not None:
        config.setdefault("input_name", os.path.basename(input_file))
    data = layer_data(x, **config)
    text = page_html(data, static=True, npy_name=input_file)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


# --------------------------------------------------------------------------- the server


def check_host(host) -> tuple[str, int]:
    """``(address, family)`` for a loopback ``host``; ValueError for any other host."""
    if not isinstance(host, str):
        raise TypeError(f"host must be a string, got {host!r}")
    name = host.strip("[]")
    if name == "localhost":
        return "127.0.0.1", socket.AF_INET
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise ValueError(f"host must be a loopback address (127.0.0.1, ::1 or localhost): convscope explore "
                         f"serves this machine only, got {host!r}")
    return str(address), socket.AF_INET6 if address.version == 6 else socket.AF_INET


class ExploreServer(ThreadingHTTPServer):
    """The HTTP server of ``convscope explore``: loopback only, one thread per connection, at most
    :data:`MAX_CONNECTIONS` of them (daemon threads)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64   # the listen backlog: connections over the cap are accepted and answered 503

    def __init__(self, address: str, family: int, port: int, page: bytes, verbose: bool = False,
                 layers: dict | None = None):
        self.address_family = family
        self.page = page
        self.verbose = verbose
        self.build_lock = threading.BoundedSemaphore(1)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.socket_timeout = SOCKET_TIMEOUT
        self.request_deadline = REQUEST_DEADLINE
        self.layers = dict(layers or {})     # key → layer_data's dict, the latest KEPT_LAYERS
        self.layers_lock = threading.Lock()
        super().__init__((address, port), _Handler)
        self.port = self.server_address[1]
        host = f"[{address}]" if family == socket.AF_INET6 else address
        self.url = f"http://{host}:{self.port}/"
        self.allowed_hosts = {f"{host}:{self.port}", f"localhost:{self.port}"}
        if self.port == 80:
            self.allowed_hosts |= {host, "localhost"}
        self.allowed_origins = {f"http://{h}" for h in self.allowed_hosts}

    def server_bind(self):
        """Bind without HTTPServer's reverse DNS lookup of the address (getfqdn)."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request, client_address):
        """A thread per connection while a slot is free; otherwise 503 at once, from the accepting thread."""
        if not self.slots.acquire(blocking=False):
            body = json.dumps({"error": f"busy: {MAX_CONNECTIONS} connections are open; try again"}).encode()
            try:
                request.settimeout(1)
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        thread = threading.Thread(target=self._serve_connection, args=(request, client_address), daemon=True)
        try:
            thread.start()
        except RuntimeError:
            self.slots.release()
            self.shutdown_request(request)

    def _serve_connection(self, request, client_address):
        try:
            self.process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address):
        """One line on stderr instead of a traceback; a client that went away or timed out is not an error."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            print(f"convscope explore: error on a request: {type(exc).__name__}: {exc}", file=sys.stderr)

    def keep(self, data: dict) -> str:
        """Keep a built layer for ``/api/element``; return its key (the oldest is dropped)."""
        key = secrets.token_urlsafe(9)
        with self.layers_lock:
            self.layers[key] = data
            while len(self.layers) > KEPT_LAYERS:
                self.layers.pop(next(iter(self.layers)))
        return key


class _Handler(BaseHTTPRequestHandler):
    server: ExploreServer
    server_version = "convscope-explore"
    sys_version = ""

    # ---- plumbing

    def setup(self):
        self.timeout = self.server.socket_timeout
        super().setup()
        self._deadline = threading.Timer(self.server.request_deadline, self._cut)
        self._deadline.daemon = True
        self._deadline.start()

    def _cut(self):
        """The request did not arrive in time: close the connection (the reading thread then ends)."""
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _arrived(self):
        self._deadline.cancel()

    def finish(self):
        self._deadline.cancel()
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's signature
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(self, code: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, value, extra: dict | None = None) -> None:
        self._send(code, json.dumps(value, separators=(",", ":"), allow_nan=False).encode("utf-8"),
                   "application/json; charset=utf-8", extra)

    def send_error(self, code, message=None, explain=None):
        """Errors as JSON ``{"error": message}`` (also those of the request-line parser)."""
        try:
            self.close_connection = True
            self._json(code, {"error": message or self.responses.get(code, ("error",))[0]})
        except OSError:
            pass

    def _guard(self) -> bool:
        """The Host must be this server's loopback address and port; cross-site requests are refused."""
        host = (self.headers.get("Host") or "").lower()
        if host not in self.server.allowed_hosts:
            self._json(403, {"error": f"Host {host[:80]!r} is not this server's address "
                                      f"({self.server.url}); convscope explore answers local requests only"})
            return False
        origin = self.headers.get("Origin")
        if origin is not None and origin.lower() not in self.server.allowed_origins:
            self._json(403, {"error": "cross-origin requests are refused"})
            return False
        if self.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            self._json(403, {"error": "cross-site requests are refused"})
            return False
        return True

    # ---- methods

    def do_GET(self):
        self._arrived()
        if not self._guard():
            return
        parts = urlsplit(self.path)
        if len(parts.query) > MAX_QUERY:
            self._json(400, {"error": f"the query string is longer than {MAX_QUERY} characters"})
        elif parts.path == "/":
            self._send(200, self.server.page, "text/html; charset=utf-8", {"Content-Security-Policy": _CSP})
        elif parts.path == "/api/health":
            self._json(200, {"ok": True})
        elif parts.path in ("/api/layer", "/api/element"):
            try:
                items = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query),
                                  max_num_fields=len(PARAMETERS))
            except ValueError as exc:
                self._json(400, {"error": f"cannot read the query string ({exc})"})
                return
            if parts.path == "/api/layer":
                self._layer(items, None)
            else:
                self._element(items)
        else:
            self._not_found()

    def do_POST(self):
        if not self._guard():
            self._arrived()
            return
        parts = urlsplit(self.path)
        if parts.path != "/api/layer":
            self._arrived()
            if parts.path in ("/", "/api/health", "/api/element"):
                self._method_not_allowed()
            else:
                self._not_found()
            return
        if parts.query:
            self._arrived()
            self._json(400, {"error": "POST /api/layer takes its parameters in the JSON body, not the query"})
            return
        length_text = self.headers.get("Content-Length") or ""
        if not is_ascii_int(length_text) or length_text.startswith("-"):
            self._arrived()
            self._json(411, {"error": "POST /api/layer needs a Content-Length"})
            return
        length = int(length_text)
        if length > MAX_BODY:
            self._arrived()
            self.close_connection = True
            self._json(413, {"error": f"the body ({length} bytes) is larger than {MAX_BODY} bytes"})
            return
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            self._arrived()
            self._json(415, {"error": "POST /api/layer takes application/json"})
            return
        body = self.rfile.read(length)
        self._arrived()
        if len(body) < length:
            self.close_connection = True
            return
        try:
            obj = json.loads(body)
        except RecursionError:
            self._json(400, {"error": "the body is not a JSON object of parameters (it nests too deeply)"})
            return
        except (ValueError, UnicodeDecodeError) as exc:
            self._json(400, {"error": f"the body is not JSON ({str(exc)[:200]})"})
            return
        if not isinstance(obj, dict):
            self._json(400, {"error": "the body must be a JSON object of parameters"})
            return
        blob = obj.pop("file", None)
        if blob is None:
            blob = obj.pop("npy", None)
        name = obj.pop("file_name", None)
        name = name[:100] if isinstance(name, str) and name else "the file"
        x = None
        if blob is not None:
            if not isinstance(blob, str):
                self._json(400, {"error": "file must be a base64 string"})
                return
            try:
                x = load_npy(base64.b64decode(blob, validate=True), name)
            except (binascii.Error, ValueError, ImportError) as exc:
                self._json(400, {"error": str(exc) if isinstance(exc, (ParameterError, ImportError))
                                 else f"file must be base64 ({exc})"})
                return
        self._layer(list(obj.items()), x, name if blob is not None else None)

    def _method_not_allowed(self):
        allow = "GET, POST" if urlsplit(self.path).path == "/api/layer" else "GET"
        self._json(405, {"error": f"method {self.command} is not allowed here (allowed: {allow})"}, {"Allow": allow})

    def _not_found(self):
        self._json(404, {"error": "not found: the routes are /, /api/layer, /api/element and /api/health"})

    def _other(self):
        self._arrived()
        if not self._guard():
            return
        if urlsplit(self.path).path in ("/", "/api/layer", "/api/element", "/api/health"):
            self._method_not_allowed()
        else:
            self._not_found()

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_TRACE = do_CONNECT = _other

    # ---- the data

    def _layer(self, items, x, file_name=None) -> None:
        try:
            kwargs = parse_parameters(items)
            if x is not None:
                kwargs.pop("input_shape", None)
                kwargs.pop("image", None)
                kwargs["input_name"] = file_name
            plan = prepare(x, **kwargs)      # every bound is checked before the build lock
        except ImportError as exc:
            self._json(400, {"error": str(exc)})
            return
        except (ValueError, TypeError) as exc:
            self._json(400, {"error": str(exc)})
            return
        if not self.server.build_lock.acquire(timeout=BUILD_WAIT):
            self._json(503, {"error": "busy: another layer is being built; try again"})
            return
        try:
            data = build(plan)
            key = self.server.keep(data)
            body = json.dumps(dict(public(data), key=key), separators=(",", ":"), allow_nan=False).encode("utf-8")
        except (ValueError, TypeError) as exc:
            self._json(400, {"error": str(exc)})
            return
        except Exception as exc:  # a bug: answered, logged in one line, the server goes on
            self._internal(exc)
            return
        finally:
            self.server.build_lock.release()
        self._send(200, body, "application/json; charset=utf-8")

    def _element(self, items) -> None:
        given = dict(items)
        if len(given) != len(items) or set(given) != {"key", "kind", "at"}:
            self._json(400, {"error": "GET /api/element takes key, kind and at, each once"})
            return
        with self.server.layers_lock:
            data = self.server.layers.get(given["key"])
        if data is None:
            self._json(410, {"error": "this layer is no longer kept by the server: change a parameter to rebuild it"})
            return
        if given["kind"] not in KINDS:
            self._json(400, {"error": f"kind must be one of {', '.join(KINDS)}, got {given['kind'][:20]!r}"})
            return
        parts = given["at"].split(",")
        if len(parts) > 4 or not all(is_ascii_int(p) for p in parts):
            self._json(400, {"error": f"at must be up to 4 integers separated by ',', got {given['at'][:40]!r}"})
            return
        try:
            item = element(data, given["kind"], tuple(int(p) for p in parts))
            body = json.dumps(item, separators=(",", ":"), allow_nan=False).encode("utf-8")
        except (ValueError, TypeError, IndexError) as exc:
            self._json(400, {"error": str(exc)})
            return
        except Exception as exc:  # a bug: answered, logged in one line, the server goes on
            self._internal(exc)
            return
        self._send(200, body, "application/json; charset=utf-8")

    def _internal(self, exc) -> None:
        print(f"convscope explore: internal error on {self.path[:100]}: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        self._json(500, {"error": "internal error"})


def make_server(x=None, *, host: str = "127.0.0.1", port: int = 0, verbose: bool = False,
                npy_name: str | None = None, **config) -> ExploreServer:
    """A listening (not yet serving) :class:`ExploreServer` whose page shows ``layer_data(x, **config)``.

    The configuration is built first, so an invalid one raises before any socket is opened.
    ``server.url`` is the page's address; ``server.serve_forever()`` serves it.
    """
    address, family = check_host(host)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int in 0..65535 (0: a free port), got {port!r}")
    if x is not None and npy_name is not None:
        config.setdefault("input_name", npy_name)
    data = layer_data(x, **config)
    npy = npy_bytes(x) if x is not None else None
    if npy is not None and len(base64.b64encode(npy)) > MAX_BODY - 4096:
        raise ValueError(f"input: the .npy file is larger than the page can send back ({MAX_BODY} bytes in base64)")
    key = secrets.token_urlsafe(9)
    page = page_html(data, npy=npy, npy_name=npy_name, key=key).encode("utf-8")
    try:
        return ExploreServer(address, family, port, page, verbose, layers={key: data})
    except OSError as exc:
        raise OSError(f"cannot listen on {address} port {port}: {exc.strerror or exc}") from None


def serve(x=None, *, host: str = "127.0.0.1", port: int = 0, open_browser: bool = True, verbose: bool = False,
          npy_name: str | None = None, **config) -> None:
    """Serve the explore page on a loopback address until Ctrl-C; print its URL first.

    ``x`` and ``config`` are :func:`layer_data`'s arguments (the page starts with them);
    ``port=0`` picks a free port; ``open_browser`` opens the page with :mod:`webbrowser`;
    ``verbose`` logs every request on stderr.  Ctrl-C (or SIGTERM) stops the server and returns.
    """
    server = make_server(x, host=host, port=port, verbose=verbose, npy_name=npy_name, **config)
    previous = None
    if threading.current_thread() is threading.main_thread():   # `kill` stops it like Ctrl-C
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        print(f"convscope explore: serving {server.url} (Ctrl-C stops it)", flush=True)
        if open_browser:
            import webbrowser

            if not webbrowser.open(server.url):
                print(f"convscope explore: no browser found; open {server.url}", flush=True)
        server.serve_forever(poll_interval=0.25)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print("convscope explore: stopped", flush=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt
