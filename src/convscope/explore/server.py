"""The explore page and its local server.

Routes (everything else is 404, other methods 405):

* ``GET /``: the page (HTML, CSS and JavaScript in one response; it loads nothing else);
* ``GET /api/layer?input=3x6x6&kernel_size=3&padding=1&...``: :func:`~convscope.explore.layer_data`
  as JSON (parameters in :data:`PARAMETERS`);
* ``POST /api/layer`` with a JSON object of the same parameters, plus ``"npy"``: a ``.npy`` file,
  base64-encoded (the page's file picker), read with ``np.load(allow_pickle=False)``;
* ``GET /api/health``: ``{"ok": true}``.

A bad parameter or an invalid combination answers 400 with ``{"error": message}``, the message
being the library's own.  The server binds to a loopback address only, answers only requests
whose ``Host`` is that address (or ``localhost``) with its port (a guard against DNS rebinding),
refuses cross-site requests, caps the URL and the body, and builds one layer at a time.
"""
from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import json
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

from .data import GRAD_OUTPUTS, LIMITS, MAX_ELEMENTS, MAX_TERMS, layer_data

MAX_QUERY = 2048          # characters of a query string
MAX_BODY = 1 << 20        # bytes of a POST body (a 16×64×64 float64 input is 512 KiB, 683 KiB in base64)
BUILD_WAIT = 30           # seconds a request waits for the build before it is answered 503
PARAMETERS = ("input", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "padding_mode",
              "bias", "seed", "integers", "grad_output")
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
    if len(value) > 64:
        raise ParameterError(f"{name} must be at most 64 characters, got {len(value)}")
    return value.strip()


def _int(text: str, name: str) -> int:
    if not text.lstrip("-").isdigit() or text.count("-") > 1 or len(text) > 12:
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
    for name in ("kernel_size", "stride", "dilation"):
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
    if "grad_output" in seen:
        if seen["grad_output"] not in GRAD_OUTPUTS:
            raise ParameterError(f"grad_output must be 'ones' or 'random', got {seen['grad_output']!r}")
        kwargs["grad_output"] = seen["grad_output"]
    return kwargs


def load_npy(data: bytes) -> np.ndarray:
    """An array from the bytes of a ``.npy`` file (no pickles)."""
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ParameterError(f"npy: cannot read the file as a .npy array ({exc})") from None


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
    if config["input_given"]:
        args += ["--input-file", input_file or "X.npy"]
    else:
        args += ["--input", f"{H}x{W}" if C == 1 else f"{C}x{H}x{W}", "--seed", str(config["seed"])]
        if config["integers"]:
            args.append("--integers")
    args += ["-k", pair(config["kernel_size"])]
    if config["out_channels"] != 1:
        args += ["--out-channels", str(config["out_channels"])]
    if config["bias"]:
        given = config.get("bias_given")
        args += ["--bias"] + ([",".join(f"{v:g}" for v in given)] if given else [])
    padding = config["padding"]
    for flag, value, default in (("-s", pair(config["stride"]), "1"),
                                 ("-p", padding if isinstance(padding, str) else
                                  str(padding) if isinstance(padding, int) else pair(padding), "0"),
                                 ("-d", pair(config["dilation"]), "1"), ("-g", str(config["groups"]), "1")):
        if value != default:
            args += [flag, value]
    if config["padding_mode"] != "zeros":
        args += ["--padding-mode", config["padding_mode"]]
    if config["grad_output"] != "ones":
        args += ["--grad-output", config["grad_output"]]
    return shlex.join(args)


def _script_json(value) -> str:
    """JSON safe inside a <script> element ('<' escaped, so no '</script>' can end it)."""
    return (json.dumps(value, separators=(",", ":"), allow_nan=False)
            .replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def page_html(data: dict | None = None, *, static: bool = False, npy: bytes | None = None,
              npy_name: str | None = None, error: str | None = None) -> str:
    """The page as one HTML document.

    ``data`` (from :func:`layer_data`) is embedded and shown at once.  ``static=True`` makes the
    snapshot of :func:`write_page`: controls read-only, with a hint naming the command that changes
    them; otherwise the page asks its server for new data when a control changes, sending ``npy``
    (the bytes of the input's ``.npy`` file, when the input came from one) along.
    """
    boot = {
        "mode": "static" if static else "server",
        "data": data,
        "error": error,
        "npy": None if npy is None else base64.b64encode(npy).decode("ascii"),
        "npy_name": npy_name,
        "command": (command_line(data["config"], npy_name)
                    if data is not None and not data["config"].get("weight_given") else None),
        "limits": dict(LIMITS, elements=MAX_ELEMENTS, terms=MAX_TERMS),
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
    """The HTTP server of ``convscope explore``: loopback only, one thread per request (daemon threads)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: str, family: int, port: int, page: bytes, verbose: bool = False):
        self.address_family = family
        self.page = page
        self.verbose = verbose
        self.build_lock = threading.BoundedSemaphore(1)
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


class _Handler(BaseHTTPRequestHandler):
    server: ExploreServer
    server_version = "convscope-explore"
    sys_version = ""
    timeout = 30  # seconds a connection may stay silent

    # ---- plumbing

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
        if not self._guard():
            return
        parts = urlsplit(self.path)
        if len(parts.query) > MAX_QUERY:
            self._json(400, {"error": f"the query string is longer than {MAX_QUERY} characters"})
        elif parts.path == "/":
            self._send(200, self.server.page, "text/html; charset=utf-8", {"Content-Security-Policy": _CSP})
        elif parts.path == "/api/health":
            self._json(200, {"ok": True})
        elif parts.path == "/api/layer":
            try:
                items = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query),
                                  max_num_fields=len(PARAMETERS))
            except ValueError as exc:
                self._json(400, {"error": f"cannot read the query string ({exc})"})
                return
            self._layer(items, None)
        else:
            self._not_found()

    def do_POST(self):
        if not self._guard():
            return
        parts = urlsplit(self.path)
        if parts.path != "/api/layer":
            if parts.path in ("/", "/api/health"):
                self._method_not_allowed()
            else:
                self._not_found()
            return
        if parts.query:
            self._json(400, {"error": "POST /api/layer takes its parameters in the JSON body, not the query"})
            return
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            self._json(411, {"error": "POST /api/layer needs a Content-Length"})
            return
        length = int(length_text)
        if length > MAX_BODY:
            self.close_connection = True
            self._json(413, {"error": f"the body ({length} bytes) is larger than {MAX_BODY} bytes"})
            return
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            self._json(415, {"error": "POST /api/layer takes application/json"})
            return
        body = self.rfile.read(length)
        try:
            obj = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            self._json(400, {"error": f"the body is not JSON ({exc})"})
            return
        if not isinstance(obj, dict):
            self._json(400, {"error": "the body must be a JSON object of parameters"})
            return
        npy = obj.pop("npy", None)
        x = None
        if npy is not None:
            if not isinstance(npy, str):
                self._json(400, {"error": "npy must be a base64 string"})
                return
            try:
                x = load_npy(base64.b64decode(npy, validate=True))
            except (binascii.Error, ValueError) as exc:
                self._json(400, {"error": str(exc) if isinstance(exc, ParameterError)
                                 else f"npy must be base64 ({exc})"})
                return
        self._layer(list(obj.items()), x)

    def _method_not_allowed(self):
        allow = "GET, POST" if urlsplit(self.path).path == "/api/layer" else "GET"
        self._json(405, {"error": f"method {self.command} is not allowed here (allowed: {allow})"}, {"Allow": allow})

    def _not_found(self):
        self._json(404, {"error": "not found: the routes are /, /api/layer and /api/health"})

    def _other(self):
        if not self._guard():
            return
        if urlsplit(self.path).path in ("/", "/api/layer", "/api/health"):
            self._method_not_allowed()
        else:
            self._not_found()

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_TRACE = do_CONNECT = _other

    # ---- the data

    def _layer(self, items, x) -> None:
        try:
            kwargs = parse_parameters(items)
            if x is not None:
                kwargs.pop("input_shape", None)
        except ParameterError as exc:
            self._json(400, {"error": str(exc)})
            return
        if not self.server.build_lock.acquire(timeout=BUILD_WAIT):
            self._json(503, {"error": "busy: another layer is being built; try again"})
            return
        try:
            data = layer_data(x, **kwargs)
            body = json.dumps(data, separators=(",", ":"), allow_nan=False).encode("utf-8")
        except (ValueError, TypeError) as exc:
            self._json(400, {"error": str(exc)})
            return
        except Exception as exc:  # a bug: answered, logged in one line, the server goes on
            print(f"convscope explore: internal error on {self.path[:100]}: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            self._json(500, {"error": "internal error"})
            return
        finally:
            self.server.build_lock.release()
        self._send(200, body, "application/json; charset=utf-8")


def make_server(x=None, *, host: str = "127.0.0.1", port: int = 0, verbose: bool = False,
                npy_name: str | None = None, **config) -> ExploreServer:
    """A listening (not yet serving) :class:`ExploreServer` whose page shows ``layer_data(x, **config)``.

    The configuration is built first, so an invalid one raises before any socket is opened.
    ``server.url`` is the page's address; ``server.serve_forever()`` serves it.
    """
    address, family = check_host(host)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int in 0..65535 (0: a free port), got {port!r}")
    data = layer_data(x, **config)
    npy = npy_bytes(x) if x is not None else None
    if npy is not None and len(base64.b64encode(npy)) > MAX_BODY - 4096:
        raise ValueError(f"input: the .npy file is larger than the page can send back ({MAX_BODY} bytes in base64)")
    page = page_html(data, npy=npy, npy_name=npy_name).encode("utf-8")
    try:
        return ExploreServer(address, family, port, page, verbose)
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
