"""The explore server, without a browser: routes, validation, the loopback guard, Ctrl-C, --out."""
import base64
import http.client
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import urlencode

import numpy as np
import pytest

import convscope
from convscope.explore import layer_data, write_page
from convscope.explore.data import decode, public
from convscope.explore.server import MAX_BODY, MAX_CONNECTIONS, MAX_QUERY, check_host, make_server, npy_bytes

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def _default_sigint():
    """In the server's process, Ctrl-C's default action: a shell that starts the tests in the background
    (``cmd &``) ignores SIGINT in its children, and Python then installs no KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def server():
    srv = make_server(input_shape=(2, 5, 5), padding=1, padding_mode="reflect", integers=True)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def request(srv, method, path, body=None, headers=None, host=None):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", host if host is not None else f"127.0.0.1:{srv.port}")
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    if body is not None:
        if "Content-Length" not in (headers or {}):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
    else:
        conn.endheaders()
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    content_type = response.getheader("Content-Type", "")
    payload = json.loads(raw) if content_type.startswith("application/json") else raw.decode("utf-8")
    return response.status, response, payload


def post_json(srv, obj, **kw):
    return request(srv, "POST", "/api/layer", json.dumps(obj).encode(), {"Content-Type": "application/json"}, **kw)


def roundtrip(d):
    return json.loads(json.dumps(public(d)))


def without_key(data):
    assert isinstance(data.pop("key"), str)
    return data


def external_urls(text):
    return [u for u in re.findall(r"https?://[^\s\"'<>)]+", text)
            if not re.match(r"https?://(127\.0\.0\.1|localhost|\[::1\])[:/]", u)]


# --------------------------------------------------------------------------- routes


def test_the_page(server):
    status, response, text = request(server, "GET", "/")
    assert status == 200 and response.getheader("Content-Type").startswith("text/html")
    assert "default-src 'none'" in response.getheader("Content-Security-Policy")
    assert "<title>convscope explore</title>" in text and 'id="error"' in text
    assert external_urls(text) == []
    boot = json.loads(re.search(r'id="convscope-boot">(.*?)</script>', text, re.S).group(1))
    assert boot["mode"] == "server"
    assert boot["data"] == roundtrip(layer_data(input_shape=(2, 5, 5), padding=1, padding_mode="reflect",
                                                integers=True))
    assert request(server, "GET", "/api/health")[2] == {"ok": True}


def test_layer_by_query_is_layer_data(server):
    query = urlencode(dict(input="3x6x5", out_channels=2, kernel_size="3,2", stride=1, padding="1,2",
                           dilation="1", groups=1, padding_mode="circular", bias="random", seed=4, integers=1,
                           grad_output="random"))
    status, response, data = request(server, "GET", "/api/layer?" + query)
    assert status == 200, data
    assert response.getheader("Content-Type").startswith("application/json")
    assert without_key(data) == roundtrip(layer_data(input_shape=(3, 6, 5), out_channels=2, kernel_size=(3, 2),
                                        padding=(1, 2), padding_mode="circular", bias=True, seed=4,
                                        integers=True, grad_output="random"))
    status, _, data = request(server, "GET", "/api/layer?input=4x4&padding=same&bias=0.5,-1&out_channels=2")
    assert status == 200, data
    assert decode(data["arrays"]["bias"]).tolist() == [0.5, -1.0] and data["config"]["bias_given"] == [0.5, -1.0]
    assert data["config"]["padding"] == "same"


def test_layer_from_a_posted_npy(server):
    x = np.arange(24, dtype=np.float64).reshape(2, 3, 4) / 7
    body = {"kernel_size": 2, "padding": [1, 0], "padding_mode": "replicate", "bias": [0.5],
            "npy": base64.b64encode(npy_bytes(x)).decode()}
    status, _, data = post_json(server, body)
    assert status == 200, data
    assert without_key(data) == roundtrip(layer_data(x, kernel_size=2, padding=(1, 0), padding_mode="replicate",
                                                     bias=[0.5], input_name="the file"))
    status, _, body = post_json(server, {"kernel_size": [3, 2.5]})
    assert status == 400 and "kernel_size must be an integer or two" in body["error"]
    assert data["config"]["dtype"] == "float64" and data["config"]["input_given"]


@pytest.mark.parametrize("query, library", [
    ("input=3x5x5&groups=2", lambda: convscope.Conv2d(3, 1, 3, groups=2)),
    ("input=3x3&padding=3&padding_mode=reflect",
     lambda: convscope.conv2d(np.zeros((1, 3, 3), np.float32), np.zeros((1, 1, 3, 3), np.float32), padding=3,
                              padding_mode="reflect")),
    ("padding=same&stride=2", lambda: convscope.Conv2d(1, 1, 3, padding="same", stride=2)),
    ("padding_mode=mirror", lambda: convscope.Conv2d(1, 1, 3, padding_mode="mirror")),
    ("input=2x2&kernel_size=5",
     lambda: convscope.conv2d(np.zeros((1, 2, 2), np.float32), np.zeros((1, 1, 5, 5), np.float32))),
])
def test_invalid_combinations_answer_the_librarys_message(server, query, library):
    with pytest.raises((ValueError, TypeError)) as info:
        library()
    status, _, body = request(server, "GET", "/api/layer?" + query)
    assert (status, body) == (400, {"error": str(info.value)})


@pytest.mark.parametrize("query, words", [
    ("input=2000x100", "input height H must be at most 1024 in convscope explore, got 2000"),
    ("input=20x4x4", "input channels C must be at most 16"),
    ("kernel_size=99", "kernel_size must be at most 31"),
    ("out_channels=1000", "out_channels must be at most 16"),
    ("stride=17,1", "stride must be at most 16"),
    ("padding=100", "padding must be at most 64"),
    ("input=16x1024x1024&out_channels=16&kernel_size=1", "MiB"),
    ("seed=%C2%B2", "seed must be an integer, got '²'"),
    ("input=%C2%B2x4", "input must be an integer, got '²'"),
    ("out_channels=%D9%A3", "out_channels must be an integer, got '٣'"),
    ("kernel=1%202%3B3%20x", "kernel: row 2, entry 2 is not a number: 'x'"),
    ("image=moon", "image must be one of camera, coins, astronaut, digits"),
    ("stride=abc", "stride must be an integer or two"),
    ("seed=1e9", "seed must be an integer, got '1e9'"),
    ("seed=99999999999999999999", "seed must be an integer"),
    ("input=5", "input must be HxW, CxHxW or 1xCxHxW"),
    ("integers=maybe", "integers must be true or false"),
    ("bias=lots", "bias must be 'none', 'random' or numbers"),
    ("grad_output=twos", "grad_output must be 'ones' or 'random'"),
    ("frobnicate=1", "unknown parameter 'frobnicate'"),
    ("seed=1&seed=2", "parameter 'seed' is given twice"),
    ("kernel_size=" + "1" * 100, "kernel_size must be at most 64 characters"),
])
def test_bad_and_oversize_parameters_are_refused_by_name(server, query, words):
    status, _, body = request(server, "GET", "/api/layer?" + query)
    assert status == 400 and words in body["error"], body


def test_oversize_requests(server):
    status, _, body = request(server, "GET", "/api/layer?seed=" + "1" * (MAX_QUERY + 1))
    assert status == 400 and "query string" in body["error"]
    status, _, body = request(server, "GET", "/api/layer?" + "&".join(f"a{k}=1" for k in range(100)))
    assert status == 400
    status, _, body = request(server, "POST", "/api/layer", b"{}",
                              {"Content-Type": "application/json", "Content-Length": str(MAX_BODY + 1)})
    assert status == 413 and str(MAX_BODY) in body["error"]
    status, _, body = post_json(server, {"npy": base64.b64encode(npy_bytes(np.zeros((17, 2, 2)))).decode()})
    assert status == 400 and "input channels C must be at most 16" in body["error"]


def test_bad_bodies(server):
    assert request(server, "POST", "/api/layer", b"{", {"Content-Type": "application/json"})[0] == 400
    assert request(server, "POST", "/api/layer", b"[1]", {"Content-Type": "application/json"})[0] == 400
    assert request(server, "POST", "/api/layer", b"{}", {"Content-Type": "text/plain"})[0] == 415
    status, _, body = post_json(server, {"npy": "not base64!"})
    assert status == 400 and "file must be base64" in body["error"]
    status, _, body = post_json(server, {"npy": base64.b64encode(b"hello").decode()})
    assert status == 400 and "not a .npy, PNG or JPEG file" in body["error"]
    pickled = np.array([{"a": 1}], dtype=object)
    buffer = io.BytesIO()
    np.save(buffer, pickled, allow_pickle=True)
    status, _, body = post_json(server, {"npy": base64.b64encode(buffer.getvalue()).decode()})
    assert status == 400 and "must hold numbers, got dtype object" in body["error"]


@pytest.mark.parametrize("path", ["/foo", "/api", "/api/layer/", "/index.html", "/favicon.ico",
                                  "/../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/api/../../etc/passwd",
                                  "//etc/passwd", "/page.html", "/convscope/explore/page.html"])
def test_unknown_routes_and_traversal_are_404(server, path):
    status, _, body = request(server, "GET", path)
    assert status == 404 and "not found" in body["error"]


@pytest.mark.parametrize("method, path", [("PUT", "/"), ("DELETE", "/api/layer"), ("POST", "/"),
                                          ("PATCH", "/api/layer"), ("OPTIONS", "/api/layer")])
def test_wrong_methods_are_405(server, method, path):
    status, response, _ = request(server, method, path, b"" if method != "OPTIONS" else None)
    assert status == 405 and response.getheader("Allow")


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1:{other}", "", "127.0.0.1",
                                  "0.0.0.0:{port}", "127.0.0.1.evil.example:{port}"])
def test_a_foreign_host_header_is_403(server, host):
    host = host.format(port=server.port, other=server.port + 1)
    for path in ("/", "/api/layer", "/api/health", "/nowhere"):
        status, _, body = request(server, "GET", path, host=host)
        assert status == 403 and "local requests only" in body["error"]


def test_localhost_is_accepted_and_cross_site_is_refused(server):
    assert request(server, "GET", "/api/health", host=f"localhost:{server.port}")[0] == 200
    status, _, _ = request(server, "GET", "/api/health", headers={"Origin": "http://evil.example"})
    assert status == 403
    status, _, _ = request(server, "POST", "/api/layer", b"{}", {"Content-Type": "application/json",
                                                                 "Origin": "http://evil.example"})
    assert status == 403
    assert request(server, "GET", "/api/health", headers={"Sec-Fetch-Site": "cross-site"})[0] == 403
    status, _, _ = request(server, "POST", "/api/layer", b"{}", {"Content-Type": "application/json",
                                                                 "Origin": f"http://127.0.0.1:{server.port}"})
    assert status == 200


# --------------------------------------------------------------------------- binding


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "8.8.8.8", "example.com", "", "127.0.0.1.nip.io"])
def test_non_loopback_hosts_are_refused(host):
    with pytest.raises(ValueError, match="host must be a loopback address"):
        make_server(host=host)


def test_loopback_hosts():
    assert check_host("localhost") == ("127.0.0.1", socket.AF_INET)
    assert check_host("127.0.0.1") == ("127.0.0.1", socket.AF_INET)
    assert check_host("::1") == ("::1", socket.AF_INET6)
    assert check_host("[::1]") == ("::1", socket.AF_INET6)
    srv = make_server(host="localhost", input_shape=(3, 3), kernel_size=2)
    try:
        assert srv.url == f"http://127.0.0.1:{srv.port}/" and srv.server_address[0] == "127.0.0.1"
    finally:
        srv.server_close()
    with pytest.raises(ValueError, match="port must be an int in 0..65535"):
        make_server(port=70000)


def test_an_invalid_configuration_is_refused_before_listening():
    with pytest.raises(ValueError, match=re.escape("in_channels (3) must be divisible by groups (2)")):
        make_server(input_shape=(3, 4, 4), groups=2)


# --------------------------------------------------------------------------- the command


def run_cli(*args, timeout=60):
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.run([sys.executable, "-m", "convscope", "explore", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.parametrize("args, words", [
    (["--host", "0.0.0.0"], "host must be a loopback address"),
    (["--host", "example.com"], "host must be a loopback address"),
    (["--input", "3x5x5", "-g", "2"], "in_channels (3) must be divisible by groups (2)"),
    (["--kernel", "40"], "kernel_size must be at most 31"),
    (["--preset", "sobel_q"], "kernel: row 1, entry 1 is not a number: 'sobel_q'"),
    (["--kernel-values", "1 2; 3 x"], "kernel: row 2, entry 2 is not a number: 'x'"),
    (["--image", "moon"], "image must be one of camera, coins, astronaut, digits"),
    (["--bias", "x,y"], "--bias must be numbers"),
    (["--port", "-5"], "port must be an int in 0..65535"),
])
def test_cli_refusals_are_one_line_exit_2(args, words):
    result = run_cli("--no-browser", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convscope: error:") and words in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_ctrl_c_stops_cleanly_and_requests_are_not_logged():
    env = dict(os.environ, PYTHONPATH=SRC, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "convscope", "explore", "--no-browser", "--port", "0",
                             "--input", "2x4x4", "--bias", "0.5"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_default_sigint)
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line
        port = int(match.group(1))
        for path in ("/", "/api/layer?input=3x3&kernel_size=2", "/missing"):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", path)
            assert conn.getresponse().status in (200, 404)
            conn.close()
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and err.strip() == ""           # quiet: no line per request
    assert out.strip().splitlines() == ["convscope explore: stopped"]


def test_out_writes_a_self_contained_page(tmp_path):
    path = tmp_path / "conv.html"
    result = run_cli("--input", "2x5x5", "--integers", "-p", "1", "--padding-mode", "reflect", "--out", str(path))
    assert result.returncode == 0, result.stderr
    assert str(path) in result.stdout
    text = path.read_text(encoding="utf-8")
    assert external_urls(text) == []
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=\"(?!data:)", text)  # nothing loaded
    boot = json.loads(re.search(r'id="convscope-boot">(.*?)</script>', text, re.S).group(1))
    assert boot["mode"] == "static"
    assert boot["data"] == roundtrip(layer_data(input_shape=(2, 5, 5), integers=True, padding=1,
                                                padding_mode="reflect", bias=True))
    assert boot["command"] == "convscope explore --input 2x5x5 --seed 0 --integers -k 3 -p 1 --padding-mode reflect"


def test_write_page_escapes_the_data(tmp_path):
    x = np.ones((3, 3), np.float32)
    path = write_page(tmp_path / "p.html", x, kernel_size=2, input_file="</script><b>x.npy")
    text = open(path, encoding="utf-8").read()
    assert text.count("</script>") == 2                # the boot data cannot close its element
    assert "--input-file '\\u003c/script>\\u003cb>x.npy'" in text


# --------------------------------------------------------------------------- every request is answered


def fresh_server(**attributes):
    srv = make_server(input_shape=(3, 3), kernel_size=2)
    for name, value in attributes.items():
        setattr(srv, name, value)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return srv, thread


def stop(srv, thread):
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.mark.parametrize("body", [b"[" * 100000, b'{"a":' * 50000, b'{"a": ' + b"[" * 100000 + b"]" * 100000 + b"}"])
def test_deeply_nested_bodies_are_answered_400(server, body):
    status, _, answer = request(server, "POST", "/api/layer", body, {"Content-Type": "application/json"})
    assert status == 400 and "error" in answer
    assert request(server, "GET", "/api/health")[0] == 200


def test_an_npy_whose_header_claims_37_gib_is_refused_before_allocating(server):
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': (3, {37 * 2**30 // 12}, 1), }}".encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\0" * 64
    start = time.perf_counter()
    status, _, body = post_json(server, {"file": base64.b64encode(npy).decode(), "file_name": "huge.npy"})
    assert status == 400 and f"huge.npy: the header claims shape (3, {37 * 2**30 // 12}, 1)" in body["error"]
    assert time.perf_counter() - start < 5


def test_superscript_digits_in_a_content_length_are_411(server):
    status, _, body = request(server, "POST", "/api/layer", b"{}", {"Content-Type": "application/json",
                                                                    "Content-Length": "²"})
    assert status == 411


def test_a_posted_png_and_a_corrupt_one(server):
    pytest.importorskip("PIL")
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.arange(30, dtype=np.uint8).reshape(5, 6)).save(buffer, format="PNG")
    status, _, data = post_json(server, {"file": base64.b64encode(buffer.getvalue()).decode(), "file_name": "a.png",
                                         "kernel": "sobel_y", "padding": 1})
    assert status == 200, data
    assert data["config"]["input_name"] == "a.png" and data["config"]["input_shape"] == [1, 5, 6]
    assert np.array_equal(decode(data["arrays"]["x"]), np.arange(30, dtype=np.float32).reshape(1, 5, 6) / 255)
    status, _, body = post_json(server, {"file": base64.b64encode(buffer.getvalue()[:50]).decode(),
                                         "file_name": "a.png"})
    assert status == 400 and "a.png: cannot read the file as a PNG or JPEG image" in body["error"]


def test_the_element_route_is_explains(server):
    status, _, data = request(server, "GET", "/api/layer?input=2x5x5&padding=1&padding_mode=reflect&out_channels=2")
    assert status == 200
    expected = layer_data(input_shape=(2, 5, 5), padding=1, padding_mode="reflect", out_channels=2)
    from convscope.explore import element

    for kind, at in (("output", (1, 4, 0)), ("input", (1, 0, 4)), ("weight", (1, 0, 2, 2)), ("bias", (1,))):
        status, _, got = request(server, "GET", f"/api/element?key={data['key']}&kind={kind}&at=" +
                                 ",".join(map(str, at)))
        assert status == 200 and got == json.loads(json.dumps(element(expected, kind, at))), got
    for query, code, words in (("key=nope&kind=output&at=0,0,0", 410, "no longer kept"),
                               (f"key={data['key']}&kind=grad&at=0", 400, "kind must be one of"),
                               (f"key={data['key']}&kind=output&at=0,%C2%B2,0", 400, "at must be up to 4 integers"),
                               (f"key={data['key']}&kind=output&at=0,9,0", 400, "i"),
                               (f"key={data['key']}&kind=output", 400, "takes key, kind and at")):
        status, _, body = request(server, "GET", "/api/element?" + query)
        assert status == code and words in body["error"], body


def test_a_request_over_the_limits_does_not_wait_for_the_build_lock(server):
    assert server.build_lock.acquire(timeout=10)
    try:
        start = time.perf_counter()
        status, _, body = request(server, "GET", "/api/layer?input=2000x100")
        assert status == 400 and "at most 1024" in body["error"]
        status, _, body = request(server, "GET", "/api/layer?input=16x1024x1024&out_channels=16&kernel_size=1")
        assert status == 400 and "MiB" in body["error"]
        assert time.perf_counter() - start < 5
    finally:
        server.build_lock.release()


def test_connections_are_capped_and_slow_clients_are_cut():
    srv, thread = fresh_server(socket_timeout=1.0, request_deadline=2.0)
    socks = []
    try:
        before = threading.active_count()
        for _ in range(MAX_CONNECTIONS):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            s.sendall(b"G")
            socks.append(s)
        time.sleep(0.3)
        assert threading.active_count() - before <= 2 * MAX_CONNECTIONS   # a thread and a deadline timer each
        start = time.perf_counter()
        status, _, body = request(srv, "GET", "/api/health")       # over the cap: answered at once
        assert status == 503 and "busy" in body["error"] and time.perf_counter() - start < 2
        slow = socks[0]                                            # one byte every 0.5 s: cut at the deadline
        cut = None
        for _ in range(12):
            time.sleep(0.5)
            try:
                slow.sendall(b"E")
                if slow.recv(1, socket.MSG_DONTWAIT) == b"":
                    cut = time.perf_counter() - start
                    break
            except BlockingIOError:
                continue
            except OSError:
                cut = time.perf_counter() - start
                break
        assert cut is not None and cut < 5
        time.sleep(1.5)                                             # the silent ones are cut by the socket timeout
        assert request(srv, "GET", "/api/health")[0] == 200
    finally:
        for s in socks:
            s.close()
        stop(srv, thread)


def boot_of(path):
    text = open(path, encoding="utf-8").read()
    return json.loads(re.search(r'id="convscope-boot">(.*?)</script>', text, re.S).group(1))


def test_out_with_an_image_a_preset_a_weight_file_and_a_png(tmp_path):
    pytest.importorskip("skimage")
    from PIL import Image

    page = tmp_path / "p.html"
    result = run_cli("--image", "coins", "--preset", "gaussian", "--no-bias", "--out", str(page))
    assert result.returncode == 0, result.stderr
    boot = boot_of(page)
    cfg = boot["data"]["config"]
    assert cfg["image"] == "coins" and cfg["kernel_name"] == "gaussian" and not cfg["bias"]
    assert boot["command"] == "convscope explore --image coins --preset gaussian --no-bias"
    assert boot["data"] == roundtrip(layer_data(image="coins", kernel="gaussian", bias=False))

    w = np.arange(18, dtype=np.float32).reshape(2, 1, 3, 3) - 9
    np.save(tmp_path / "w.npy", w)
    png = tmp_path / "a.png"
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8)).save(png)
    result = run_cli("--input-file", str(png), "--weight-file", str(tmp_path / "w.npy"), "--bias", "0.5", "-p", "1",
                     "--out", str(page))
    assert result.returncode == 0, result.stderr
    data = boot_of(page)["data"]
    assert np.array_equal(decode(data["arrays"]["weight"]), w) and data["config"]["input_name"] == "a.png"
    x = np.arange(48, dtype=np.float32).reshape(1, 6, 8) / 255
    assert np.array_equal(decode(data["arrays"]["output"]), convscope.conv2d(x, w, np.float32([0.5, 0.5]), padding=1))

    batch = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    np.save(tmp_path / "batch.npy", batch)
    result = run_cli("--input-file", str(tmp_path / "batch.npy"), "--sample", "1", "-k", "2", "--out", str(page))
    assert result.returncode == 0, result.stderr
    data = boot_of(page)["data"]
    assert np.array_equal(decode(data["arrays"]["x"]), batch[1]) and data["config"]["sample"] == 1


@pytest.mark.parametrize("make, words", [
    (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\nbroken"), "cannot read the file as a PNG or JPEG image"),
    (lambda p: p.write_bytes(b""), "not a .npy, PNG or JPEG file"),
    (lambda p: os.mkfifo(p), "is not a regular file"),
    (lambda p: np.save(p, np.zeros((2, 1, 3, 3), np.float32)), "pass sample=n"),
])
def test_cli_bad_input_files_are_one_line_exit_2(tmp_path, make, words):
    path = tmp_path / "in.npy"
    make(path)
    result = run_cli("--input-file", str(path), "--out", str(tmp_path / "p.html"), timeout=30)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and words in lines[0], result.stderr


def test_a_client_that_goes_away_costs_no_traceback(capfd):
    srv, thread = fresh_server()
    try:
        for pause in (0.05, 0.3, 0.6):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            s.sendall(f"GET /api/layer?input=1x1024x1024&out_channels=4 HTTP/1.0\r\nHost: 127.0.0.1:{srv.port}\r\n\r\n"
                      .encode())
            time.sleep(pause)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")   # reset, mid-answer
            s.close()
        time.sleep(1.5)
        assert request(srv, "GET", "/api/health")[0] == 200
    finally:
        stop(srv, thread)
    assert "Traceback" not in capfd.readouterr().err
