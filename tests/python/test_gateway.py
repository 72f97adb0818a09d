"""The HTTP gateway (docs/gateway.md) through HTTP clients we did not write: Python's http.client,
raw sockets (SSE, a minimal RFC 6455 WebSocket client, grpc-web frames packed with struct) and
curl (HTTP/2 by prior knowledge and over TLS). Runs and tasks really execute against a minimal
OpenAI-compatible provider written here (stdlib http.server, server-sent events).

    AGENTZD=build/bin/agentzd AGENTZ_TEST_DIR=/tmp/agentz-test \
        /usr/bin/python3 -m unittest tests/python/test_gateway.py -v

setUpModule starts one `agentzd --roles api,worker,gateway` with its embedded PostgreSQL/Redis
under $AGENTZ_TEST_DIR/python-gateway (CORS allow-list, a 64 KiB body limit and a web directory
made here). The TLS tests start build/bin/agentz-gateway in front of it with a certificate made
with the openssl CLI; the readiness test starts one whose upstream is down. The last test stops
agentzd with SIGTERM while streams are open.
"""

import base64
import contextlib
import gzip
import hashlib
import http.client
import http.server
import itertools
import json
import os
import queue
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import unittest
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENTZD = os.environ.get("AGENTZD") or os.path.join(REPO, "build", "bin", "agentzd")
GATEWAY_BIN = os.path.join(os.path.dirname(os.path.abspath(AGENTZD)), "agentz-gateway")
TEST_DIR = os.environ.get("AGENTZ_TEST_DIR") or os.path.join(REPO, "build")
READY_RE = re.compile(r"AGENTZ is running: gRPC at (\S+)")
WEB_RE = re.compile(r"web UI: http://([^/]+)/#token=(\S+)")
GW_READY_RE = re.compile(r"agentz-gateway is running: (https?)://(\S+) ")
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
ORIGIN = "http://app.example.test"
QUEUE_LIMIT = 64
TIMEOUT = 30.0

AGENTZ = None     # the agentzd process
GRPC_ADDR = None  # its gRPC host:port
GW = None         # its gateway's host:port
KEY = None        # the local admin key
FAKE = None
WEB_DIR = None
WORK = None
DATA_DIR = None
INDEX_HTML = b"<!doctype html><html><head><title>AGENTZ test</title></head><body>app</body></html>\n"
APP_JS = ("".join("console.log('agentz gateway asset %d');\n" % i for i in range(300))).encode()


# --------------------------------------------------------------------------------------------
# a minimal OpenAI-compatible provider; each model has its answer, pacing and chunk size

class _FakeHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError:
            self.send_error(400, "body is not JSON")
            return
        model = body.get("model", "")
        r = dict(answer="ok", chunk=4, delay=0.0, token_delay=0.0, burst=1)
        r.update(self.server.replies.get(model, {}))
        if r["delay"]:
            time.sleep(r["delay"])
        usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        try:  # the worker always asks for a stream
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()

            def chunk(delta, finish=None, usage=None):
                choices = [{"index": 0, "delta": delta, "finish_reason": finish}] if delta is not None else []
                d = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model,
                     "choices": choices}
                return b"data: " + json.dumps(dict(d, usage=usage) if usage else d).encode() + b"\n\n"

            self.wfile.write(chunk({"role": "assistant", "content": ""}))
            a, n = r["answer"], r["chunk"]
            pieces = [a[i:i + n] for i in range(0, len(a), n)]
            for i in range(0, len(pieces), r["burst"]):
                self.wfile.write(b"".join(chunk({"content": p}) for p in pieces[i:i + r["burst"]]))
                self.wfile.flush()
                if r["token_delay"]:
                    time.sleep(r["token_delay"])
            self.wfile.write(chunk({}, "stop"))
            if (body.get("stream_options") or {}).get("include_usage"):
                self.wfile.write(chunk(None, usage=usage))
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except OSError:
            pass  # the worker went away (a cancelled attempt)


class FakeProvider:
    def __init__(self):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeHandler)
        self.httpd.daemon_threads = True
        self.httpd.replies = {}
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def base_url(self):
        return "http://127.0.0.1:%d/v1" % self.httpd.server_address[1]

    def on(self, model, **reply):
        self.httpd.replies[model] = reply

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------------------------
# processes

def _clean_env():
    drop = ("AGENTZ_DATABASE_URL", "AGENTZ_REDIS_URL", "AGENTZ_LLM_BASE_URL", "AGENTZ_LLM_API_KEY",
            "AGENTZ_LLM_MODEL", "AGENTZ_LLM_PROVIDER", "OPENAI_API_KEY", "OPENAI_BASE_URL",
            "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "AGENTZ_ALLOW_PRIVATE_NETWORKS",
            "AGENTZ_CORS_ORIGINS", "AGENTZ_CLERK_PUBLISHABLE_KEY", "AGENTZ_ROLES")
    env = {k: v for k, v in os.environ.items()
           if k not in drop and not k.startswith("AGENTZ_GATEWAY_") and not k.startswith("AGENTZ_STREAM_")}
    for k in ("AGENTZ_RATE_LIMIT", "AGENTZ_RATE_LIMIT_WORKSPACE", "AGENTZ_RATE_LIMIT_EXPENSIVE"):
        env[k] = "0"
    env["AGENTZ_STREAM_HEARTBEAT"] = "1s"
    env["AGENTZ_STREAM_QUEUE_LIMIT"] = str(QUEUE_LIMIT)
    return env


class Proc:
    """A child process whose stdout lines are collected; stderr goes to a log file."""

    def __init__(self, argv, log_name, env=None):
        self.log_path = os.path.join(TEST_DIR, log_name)
        with open(self.log_path, "w") as log:
            self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=log, env=env or _clean_env(), text=True)
        self.lines = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in iter(self.p.stdout.readline, ""):
            self.lines.put(line)
        self.lines.put(None)

    def log_tail(self, n=30):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join([l for l in f if 'msg="rpc"' not in l and 'msg="http"' not in l][-n:])
        except OSError:
            return "(no log)"

    def wait_line(self, regex, timeout=90):
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                line = None
            if line is None:
                self.p.kill()
                self.p.wait()
                raise RuntimeError("%s: no line matching %r; log tail:\n%s"
                                   % (self.p.args[0], regex.pattern, self.log_tail()))
            m = regex.search(line)
            if m:
                return m

    def stop(self, timeout=30):
        """SIGTERM; returns the exit code (kills and raises if it does not stop)."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            raise AssertionError("%s did not stop within %ds of SIGTERM; log tail:\n%s"
                                 % (self.p.args[0], timeout, self.log_tail()))
        self.p.stdout.close()
        return rc


def reap_embedded(data_dir):
    """After an agentzd that did not exit cleanly: stops the PostgreSQL and Redis it left running
    (by the pids in their pid files, checked to be serving data_dir)."""
    pids = []
    for f in ("pg/postmaster.pid", "run/redis.pid"):
        try:
            with open(os.path.join(data_dir, f)) as fh:
                pid = int(fh.readline())
            with open("/proc/%d/cmdline" % pid, "rb") as fh:
                if data_dir.encode() in fh.read():
                    os.kill(pid, signal.SIGTERM)
                    pids.append(pid)
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + 15
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if os.path.exists("/proc/%d" % p)]
        time.sleep(0.05)
    for p in pids:
        os.kill(p, signal.SIGKILL)


def stop_agentzd():
    """SIGTERM to agentzd; returns its exit code. Cleans up after it when it did not exit 0."""
    global AGENTZ
    proc, AGENTZ = AGENTZ, None
    rc = None
    try:
        rc = proc.stop()
    finally:
        if rc != 0:
            reap_embedded(DATA_DIR)
    return rc, proc


def setUpModule():
    global AGENTZ, GRPC_ADDR, GW, KEY, FAKE, WEB_DIR, WORK, DATA_DIR
    if not os.access(AGENTZD, os.X_OK):
        raise RuntimeError("agentzd not found at %s (set AGENTZD)" % AGENTZD)
    if not shutil.which("curl"):
        raise RuntimeError("curl is required (HTTP/2 and TLS checks)")
    if "HTTP2" not in subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout:
        raise RuntimeError("this curl lacks HTTP/2 support (Features has no HTTP2); install Debian's curl")
    WORK = tempfile.mkdtemp(prefix="agentz-pygw-")
    WEB_DIR = os.path.join(WORK, "web")
    os.makedirs(os.path.join(WEB_DIR, "assets"))
    with open(os.path.join(WEB_DIR, "index.html"), "wb") as f:
        f.write(INDEX_HTML)
    with open(os.path.join(WEB_DIR, "assets", "app-x.js"), "wb") as f:
        f.write(APP_JS)
    FAKE = FakeProvider()
    DATA_DIR = data_dir = os.path.join(os.path.abspath(TEST_DIR), "python-gateway")
    os.makedirs(data_dir, exist_ok=True)
    AGENTZ = Proc([AGENTZD, "--roles", "api,worker,gateway", "--data-dir", data_dir,
                   "--listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0",
                   "--gateway-cors-origins", ORIGIN, "--gateway-max-body", "64k",
                   "--gateway-web-dir", WEB_DIR], "python-gateway-agentzd.log")
    try:
        GRPC_ADDR = AGENTZ.wait_line(READY_RE).group(1)
        m = AGENTZ.wait_line(WEB_RE, timeout=10)
    except BaseException:
        reap_embedded(data_dir)
        FAKE.stop()
        shutil.rmtree(WORK, ignore_errors=True)
        raise
    GW, KEY = m.group(1), m.group(2)


def tearDownModule():
    if FAKE is not None:
        FAKE.stop()
    if WORK:
        shutil.rmtree(WORK, ignore_errors=True)
    if AGENTZ is not None:
        rc, proc = stop_agentzd()
        if rc != 0:
            raise AssertionError("agentzd exited %d after SIGTERM; log tail:\n%s" % (rc, proc.log_tail()))


# --------------------------------------------------------------------------------------------
# HTTP helpers

class Resp:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    @property
    def json(self):
        return json.loads(self.body)

    def h(self, name):
        return self.headers.get(name.lower())

    def __repr__(self):
        return "HTTP %d %s %r" % (self.status, self.headers, self.body[:400])


def call(method, path, body=None, headers=None, key="admin", host=None, conn=None):
    """One request over http.client; body dicts are sent as JSON. key None sends no credential."""
    h = {}
    key = KEY if key == "admin" else key
    if key:
        h["Authorization"] = "Bearer " + key
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    own = conn is None
    c = conn or http.client.HTTPConnection(host or GW, timeout=TIMEOUT)
    try:
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        if own:
            c.close()


def ok(method, path, body=None, **kw):
    r = call(method, path, body, **kw)
    if r.status != 200:
        tail = AGENTZ.log_tail(15) if AGENTZ else ""
        raise AssertionError("%s %s: %r\nlog tail:\n%s" % (method, path, r, tail))
    return r.json


def wait_for(fn, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


def curl(*args, timeout=30):
    """Runs curl; returns (status line, status, headers, body) of the last response."""
    p = subprocess.run(["curl", "-sS", "-i", "--max-time", str(timeout)] + list(args),
                       capture_output=True, timeout=timeout + 5)
    if p.returncode != 0:
        raise AssertionError("curl %s failed (%d): %s" % (args, p.returncode, p.stderr.decode()))
    out = p.stdout
    while True:
        head, _, out = out.partition(b"\r\n\r\n")
        line, status, headers = parse_head(head)
        if status != 100:
            return line, status, headers, out


def parse_head(head):
    """(status line, status, {lower-case name: value}) of an HTTP/1 response head."""
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    return lines[0], int(lines[0].split()[1]), headers


def raw_get(host, path, hdrs, small=False, tls=None):
    """A GET on a socket of its own: (socket, status, headers, bytes read past the head)."""
    h, p = host.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if small:
        # a small receive window and segment size: the gateway's side of the connection cannot
        # buffer much either (Linux sizes send buffers by the peer's MSS)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    sock.settimeout(TIMEOUT)
    sock.connect((h, int(p)))
    if tls:
        sock = tls.wrap_socket(sock, server_hostname=h)
    sock.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (
        path, host, "".join("%s: %s\r\n" % kv for kv in hdrs.items()))).encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = sock.recv(65536)
        if not d:
            raise AssertionError("connection closed before the response head: %r" % buf)
        buf += d
    head, buf = buf.split(b"\r\n\r\n", 1)
    return (sock,) + parse_head(head)[1:] + (buf,)


def uid():
    return uuid.uuid4().hex[:10]


def make_agent(model=None, **fields):
    model = model or "m-" + uid()
    a = {"role": "Gateway tested agent", "goal": "Answer for the gateway suite", "backstory": "Python.",
         "llm": {"provider": "openai", "model": model, "baseUrl": FAKE.base_url}}
    a.update(fields)
    return ok("POST", "/v1/agents", a)


def make_workflow(agent_id, steps=1, **fields):
    wf = {"name": "wf-" + uid(), "process": "PROCESS_SEQUENTIAL",
          "inputs": [{"name": "topic", "required": False, "defaultValue": "x"}],
          "steps": [{"id": "s%d" % i, "agentId": agent_id, "description": "Step %d about {topic}" % i,
                     "expectedOutput": "text"} for i in range(1, steps + 1)]}
    wf.update(fields)
    return ok("POST", "/v1/workflows", wf)


TERMINAL_RUN = ("RUN_STATUS_SUCCEEDED", "RUN_STATUS_FAILED", "RUN_STATUS_CANCELLED")
TERMINAL_TASK = ("TASK_STATUS_SUCCEEDED", "TASK_STATUS_FAILED", "TASK_STATUS_CANCELLED")


def wait_run(run_id, statuses=TERMINAL_RUN, timeout=40):
    return wait_for(lambda: (lambda r: r if r.get("status") in statuses else None)(
        ok("GET", "/v1/runs/" + run_id)), timeout, "run %s to reach %s" % (run_id, statuses))


def wait_task(task_id, statuses=TERMINAL_TASK, timeout=40):
    return wait_for(lambda: (lambda t: t if t.get("status") in statuses else None)(
        ok("GET", "/v1/tasks/" + task_id)), timeout, "task %s to reach %s" % (task_id, statuses))


# --------------------------------------------------------------------------------------------
# a raw HTTP/1.1 client for streams: chunked bodies, SSE parsing, abrupt closes

class Stream:
    def __init__(self, path, headers=None, key="admin", small=False, host=None, accept="text/event-stream",
                 tls=None):
        hdrs = {"Accept": accept} if accept else {}
        key = KEY if key == "admin" else key
        if key:
            hdrs["Authorization"] = "Bearer " + key
        hdrs.update(headers or {})
        self.sock, self.status, self.headers, self.raw = raw_get(host or GW, path, hdrs, small, tls)
        self.body, self.eof, self.done = b"", False, False  # body: de-chunked, not yet parsed
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        self.left = int(self.headers.get("content-length", "-1"))
        self._dechunk()

    def _recv(self):
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise AssertionError("stream read timed out; got so far: %r" % self.body[-500:])
        if not data:
            self.eof = True
        self.raw += data

    def _dechunk(self):
        if not self.chunked:
            take = self.raw if self.left < 0 else self.raw[:self.left]
            self.body += take
            self.raw = self.raw[len(take):]
            if self.left >= 0:
                self.left -= len(take)
                self.done = self.left == 0
            return
        while not self.done:
            if b"\r\n" not in self.raw:
                return
            size_line, rest = self.raw.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if len(rest) < size + 2:
                return
            if size == 0:
                self.done = True
                return
            self.body += rest[:size]
            self.raw = rest[size + 2:]

    def fill(self):
        """Reads more of the body; False at its end."""
        if self.done or self.eof:
            return False
        self._recv()
        self._dechunk()
        return True

    def read_all(self):
        while self.fill():
            pass
        if not self.done:
            raise AssertionError("the connection closed before the body ended: %r" % self.body[-300:])
        return self.body

    def events(self):
        """Yields SSE blocks as dicts: id, event, data (parsed when JSON), comments, retry."""
        while True:
            while b"\n\n" not in self.body:
                if not self.fill():
                    if self.body.strip():
                        raise AssertionError("stream ended inside an event: %r" % self.body)
                    return
            block, self.body = self.body.split(b"\n\n", 1)
            ev = {"id": None, "event": None, "data": None, "comments": [], "retry": None}
            for line in block.decode().split("\n"):
                if line.startswith(":"):
                    ev["comments"].append(line[1:].strip())
                else:
                    k, _, v = line.partition(":")
                    v = v[1:] if v.startswith(" ") else v
                    if k == "data":
                        ev["data"] = v if ev["data"] is None else ev["data"] + "\n" + v
                    elif k in ("id", "event", "retry"):
                        ev[k] = v
            if ev["data"] is not None:
                try:
                    ev["data"] = json.loads(ev["data"])
                except ValueError:
                    pass
            yield ev

    def lines(self):
        """Yields NDJSON lines as parsed JSON."""
        while True:
            while b"\n" not in self.body:
                if not self.fill():
                    return
            line, self.body = self.body.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)

    def abort(self):
        """Closes with a RST: no clean shutdown."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.sock.close()

    close = abort

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.abort()


def sse(path, **kw):
    """Opens an SSE stream and reads it to its end: (status, events, the end event's status)."""
    with Stream(path, **kw) as s:
        return (s.status,) + (sse_collect(s) if s.status == 200 else ([], json.loads(s.read_all())))


def tokens_of(events):
    return [e for e in events if e["data"] and "token" in e["data"]]


def sse_collect(stream, stop=None, timeout=60):
    """Reads SSE events to the end event (or until stop(ev) is true). Returns (events, end)."""
    events, end = [], None
    deadline = time.monotonic() + timeout
    for ev in stream.events():
        if time.monotonic() > deadline:
            raise AssertionError("no end within %ds; last events: %r" % (timeout, events[-5:]))
        if ev["event"] == "end":
            end = ev["data"]
            break
        events.append(ev)
        if stop and stop(ev):
            break
    return events, end


def durable(events):
    return [ev for ev in events if ev["id"] is not None]


def check_ids(tc, events):
    """id: lines equal the events' sequences; ephemeral events carry neither."""
    for ev in events:
        if ev["data"] is None:
            tc.assertTrue(ev["comments"], ev)
            continue
        seq = ev["data"].get("sequence")  # int64: a string
        tc.assertEqual(ev["id"], seq, "the id: line is not the event's sequence: %r" % ev)
        tc.assertTrue(seq is None or int(seq) > 0, ev)


# --------------------------------------------------------------------------------------------
# WebSocket (RFC 6455), minimal

class WS:
    def __init__(self, path, protocols=("agentz.v1",), origin=None, headers=None, host=None):
        self.key = base64.b64encode(os.urandom(16)).decode()
        hdrs = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": self.key,
                "Sec-WebSocket-Version": "13"}
        if protocols:
            hdrs["Sec-WebSocket-Protocol"] = ", ".join(protocols)
        if origin:
            hdrs["Origin"] = origin
        hdrs.update(headers or {})
        self.sock, self.status, self.headers, self.buf = raw_get(host or GW, path, hdrs)

    def http_body(self):
        n = int(self.headers.get("content-length", "0"))
        while len(self.buf) < n:
            d = self.sock.recv(65536)
            if not d:
                break
            self.buf += d
        return self.buf[:n]

    def accept_ok(self):
        want = base64.b64encode(hashlib.sha1(
            (self.key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        return self.status == 101 and self.headers.get("sec-websocket-accept") == want

    def _need(self, n):
        while len(self.buf) < n:
            d = self.sock.recv(65536)
            if not d:
                raise EOFError
            self.buf += d
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self):
        """(opcode, payload) of the next server frame; EOFError when the connection closed."""
        b0, b1 = self._need(2)
        if b1 & 0x80:
            raise AssertionError("the server masked a frame")
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._need(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._need(8))[0]
        return b0 & 0x0F, self._need(n)

    def send_frame(self, opcode, payload=b"", mask=True, fin=True):
        n, mbit = len(payload), 0x80 if mask else 0
        head = bytes([(0x80 if fin else 0) | opcode]) + (
            bytes([mbit | n]) if n < 126 else bytes([mbit | 126]) + struct.pack("!H", n) if n < 65536
            else bytes([mbit | 127]) + struct.pack("!Q", n))
        if mask:
            m = os.urandom(4)
            payload = bytes(c ^ m[i % 4] for i, c in enumerate(payload))
            head += m
        self.sock.sendall(head + payload)

    def run(self):
        """Reads to the close frame: (text messages, close code, reason)."""
        msgs = []
        while True:
            op, data = self.recv_frame()
            if op == 1:
                msgs.append(json.loads(data))
            elif op == 8:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                try:
                    self.send_frame(8, data[:2])
                except OSError:
                    pass
                return msgs, code, data[2:].decode()
            elif op == 9:
                self.send_frame(10, data)

    def closed_by_server(self, timeout=5):
        """True when the server ends the connection (a close frame or EOF) within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                op, _ = self.recv_frame()
                if op == 8:
                    return True
        except (EOFError, ConnectionResetError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()


# --------------------------------------------------------------------------------------------
# protobuf wire format and grpc-web frames, by hand

def pb_varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def pb_string(field, s):
    b = s.encode()
    return pb_varint(field << 3 | 2) + pb_varint(len(b)) + b


def pb_fields(data):
    """{field number: [values]} of one message level (varints as ints, length-delimited as bytes)."""
    out, i = {}, 0

    def varint():
        nonlocal i
        v, shift = 0, 0
        while True:
            b = data[i]
            i += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return v

    while i < len(data):
        key = varint()
        wt = key & 7
        if wt == 0:
            v = varint()
        elif wt == 2:
            n = varint()
            v, i = data[i:i + n], i + n
        elif wt in (1, 5):
            n = 8 if wt == 1 else 4
            v, i = data[i:i + n], i + n
        else:
            raise ValueError("wire type %d" % wt)
        out.setdefault(key >> 3, []).append(v)
    return out


def gw_frame(msg, flags=0):
    return struct.pack("!BI", flags, len(msg)) + msg


def b64_chunks(data):
    """Decodes base64 that may be several padded chunks back to back."""
    out, data = b"", data.replace(b"\r", b"").replace(b"\n", b"")
    for i in range(0, len(data), 4):
        out += base64.b64decode(data[i:i + 4])
    return out


def gw_parse(body):
    """[(flags, payload)] of a grpc-web body; trailers frames parsed into a dict."""
    frames, i = [], 0
    while i < len(body):
        flags, n = struct.unpack("!BI", body[i:i + 5])
        payload = body[i + 5:i + 5 + n]
        if len(payload) != n:
            raise AssertionError("truncated grpc-web frame in %r" % body)
        i += 5 + n
        if flags & 0x80:
            tr = {}
            for line in payload.decode().split("\r\n"):
                if line:
                    k, _, v = line.partition(":")
                    tr[k.strip().lower()] = v.strip()
            payload = tr
        frames.append((flags, payload))
    return frames


def grpcweb(method, msg, text=False, conn=None, key="admin", extra=None, raw_body=None):
    ctype = "application/grpc-web-text" if text else "application/grpc-web+proto"
    body = raw_body if raw_body is not None else gw_frame(msg)
    if text and raw_body is None:
        body = base64.b64encode(body)
    h = {"Content-Type": ctype, "X-Grpc-Web": "1"}
    h.update(extra or {})
    r = call("POST", method, body, headers=h, key=key, conn=conn)
    data = b64_chunks(r.body) if text and r.status == 200 else r.body
    return r, (gw_parse(data) if r.status == 200 else [])


# ============================================================================================

class T01Rest(unittest.TestCase):
    def assert_proto3_json(self, obj, maps=("labels", "inputs")):
        """lowerCamelCase keys (map keys aside), timestamps RFC 3339."""
        if isinstance(obj, list):
            for v in obj:
                self.assert_proto3_json(v, maps)
            return
        if not isinstance(obj, dict):
            return
        for k, v in obj.items():
            self.assertRegex(k, r"^[a-z][A-Za-z0-9]*$", "key %r is not lowerCamelCase" % k)
            if k.endswith("Time"):
                self.assertRegex(v, TS_RE, k)
            if k not in maps:
                self.assert_proto3_json(v, maps)

    def test_agents_crud_pagination_and_proto3_json(self):
        team = "t" + uid()
        created = [make_agent(name="gw-" + team + "-%d" % i, labels={"team": team},
                              llm={"provider": "openai", "model": "x", "timeout": "1.5s"})
                   for i in range(3)]
        a = created[0]
        self.assert_proto3_json(a)
        self.assertEqual(a["status"], "AGENT_STATUS_IDLE")          # enums by name
        self.assertEqual(a["maxIter"], 25)                          # int32 as a number
        self.assertRegex(a["llm"]["timeout"], r"^1\.50*s$")          # Duration
        for default in ("allowDelegation", "memory", "disabled", "tools", "maxRpm"):
            self.assertNotIn(default, a)                            # defaults left out
        self.assertEqual(ok("GET", "/v1/agents/" + a["id"]), a)

        # pageSize, nextPageToken and labelSelector; the .proto names work too.
        page1 = ok("GET", "/v1/agents?pageSize=2&labelSelector=team%3D" + team)
        self.assertEqual((len(page1["agents"]), page1["totalSize"], bool(page1["nextPageToken"])),
                         (2, 3, True))
        page2 = ok("GET", "/v1/agents?page_size=2&label_selector=team%3D" + team + "&pageToken="
                   + page1["nextPageToken"])
        self.assertEqual((len(page2["agents"]), "nextPageToken" in page2), (1, False))
        self.assertEqual({x["id"] for x in page1["agents"] + page2["agents"]}, {x["id"] for x in created})

        # PATCH with updateMask: only goal changes.
        upd = ok("PATCH", "/v1/agents/%s?updateMask=goal" % a["id"], {"goal": "Find more", "role": "ignored"})
        self.assertEqual((upd["goal"], upd["role"]), ("Find more", a["role"]))
        self.assertNotEqual(upd["etag"], a["etag"])
        # body id equal to the path id is fine; a different one is refused naming both.
        upd2 = ok("PATCH", "/v1/agents/" + a["id"], {"id": a["id"], "max_iter": 7})
        self.assertEqual(upd2["maxIter"], 7)
        r = call("PATCH", "/v1/agents/" + a["id"], {"id": created[1]["id"], "goal": "hijack"})
        self.assertEqual(r.status, 400, r)
        self.assertIn("agent.id", r.json["message"])
        self.assertEqual(ok("GET", "/v1/agents/" + a["id"]), upd2)
        self.assertEqual(ok("GET", "/v1/agents/" + created[1]["id"]), created[1])

        self.assertEqual(ok("DELETE", "/v1/agents/" + created[2]["id"]), {})
        self.assertEqual(call("GET", "/v1/agents/" + created[2]["id"]).status, 404)

    def test_tasks_create_get_list_cancel_retry_attempts_stats(self):
        model = "m-" + uid()
        FAKE.on(model, answer="The answer is 42.", delay=30)
        agent = make_agent(model)
        t = ok("POST", "/v1/tasks", {"description": "Compute", "expectedOutput": "a number",
                                      "agentId": agent["id"], "labels": {"k": "v"}})
        self.assertIn(t["status"], ("TASK_STATUS_PENDING", "TASK_STATUS_QUEUED", "TASK_STATUS_RUNNING"))
        self.assertEqual(ok("GET", "/v1/tasks/" + t["id"])["description"], "Compute")
        listed = ok("GET", "/v1/tasks?agentId=" + agent["id"])
        self.assertEqual([x["id"] for x in listed["tasks"]], [t["id"]])
        wait_task(t["id"], ("TASK_STATUS_RUNNING",))
        c = ok("POST", "/v1/tasks/%s:cancel" % t["id"], {"reason": "from the gateway suite"})
        self.assertEqual(c["status"], "TASK_STATUS_CANCELLED")
        FAKE.on(model, answer="The answer is 42.")
        rt = ok("POST", "/v1/tasks/%s:retry" % t["id"], {})
        self.assertNotIn(rt["status"], TERMINAL_TASK)
        done = wait_task(t["id"])
        self.assertEqual((done["status"], done["attempt"], done["output"]["raw"]),
                         ("TASK_STATUS_SUCCEEDED", 2, "The answer is 42."), done)
        self.assertEqual(done["usage"]["totalTokens"], "18")      # int64 as a string
        att = ok("GET", "/v1/tasks/%s/attempts" % t["id"])["attempts"]
        self.assertEqual([x.get("status") for x in att], ["TASK_STATUS_CANCELLED", "TASK_STATUS_SUCCEEDED"])
        stats = ok("GET", "/v1/tasks:stats?agentId=" + agent["id"])
        self.assertEqual((stats["total"], stats["succeeded"]), ("1", "1"))  # int64 as strings
        self.assertRegex(stats["startTime"], TS_RE)

    def test_workflows_templates_runs_and_analytics(self):
        model = "m-" + uid()
        FAKE.on(model, answer="step output")
        agent = make_agent(model)
        wf = make_workflow(agent["id"], labels={"suite": "gw"})
        self.assertEqual(wf["version"], 1)
        self.assertEqual(ok("GET", "/v1/workflows/" + wf["id"])["name"], wf["name"])
        self.assertIn(wf["id"], [w["id"] for w in ok("GET", "/v1/workflows?pageSize=100")["workflows"]])
        v2 = ok("PATCH", "/v1/workflows/%s?updateMask=description" % wf["id"], {"description": "second"})
        self.assertEqual(v2["version"], 2)
        self.assertEqual(ok("GET", "/v1/workflows/%s?version=1" % wf["id"]).get("description"), None)
        versions = ok("GET", "/v1/workflows/%s/versions" % wf["id"])["workflows"]
        self.assertEqual(sorted(v["version"] for v in versions), [1, 2])

        run = ok("POST", "/v1/workflows/%s/runs" % wf["id"], {"inputs": {"topic": "AI"}})
        self.assertEqual((run["inputs"], run["workflowVersion"]), ({"topic": "AI"}, 2))
        done = wait_run(run["id"])
        self.assertEqual((done["status"], done["steps"][0]["output"]["raw"]),
                         ("RUN_STATUS_SUCCEEDED", "step output"))
        self.assertIn(run["id"], [r["id"] for r in ok("GET", "/v1/runs?workflowId=" + wf["id"])["runs"]])
        self.assertEqual([r["id"] for r in ok("GET", "/v1/workflows/%s/runs" % wf["id"])["runs"]],
                         [run["id"]])

        # cancel, then resume
        FAKE.on(model, answer="slow", delay=30)
        slow = ok("POST", "/v1/workflows/%s/runs" % wf["id"], {})
        wait_run(slow["id"], ("RUN_STATUS_RUNNING",))
        c = ok("POST", "/v1/runs/%s:cancel" % slow["id"], {"reason": "suite"})
        self.assertEqual(wait_run(c["id"])["status"], "RUN_STATUS_CANCELLED")
        FAKE.on(model, answer="resumed")
        ok("POST", "/v1/runs/%s:resume" % slow["id"], {})
        resumed = wait_run(slow["id"])
        self.assertEqual((resumed["status"], resumed["steps"][0]["output"]["raw"]),
                         ("RUN_STATUS_SUCCEEDED", "resumed"))
        an = ok("GET", "/v1/workflows/%s/analytics" % wf["id"])
        self.assertEqual((an["workflowId"], an["runsTotal"], an["runsSucceeded"]), (wf["id"], "2", "2"))

        other = make_workflow(agent["id"])
        self.assertEqual(ok("DELETE", "/v1/workflows/" + other["id"]), {})
        self.assertEqual(call("GET", "/v1/workflows/" + other["id"]).status, 404)

        templates = ok("GET", "/v1/templates")["templates"]
        self.assertTrue(templates and all(t["id"] for t in templates))
        inst = ok("POST", "/v1/templates/%s:instantiate" % templates[0]["id"], {"name": "inst-" + uid()})
        self.assertTrue(inst["workflow"]["id"])
        self.assertEqual(ok("GET", "/v1/workflows/" + inst["workflow"]["id"])["id"], inst["workflow"]["id"])

    def test_system_whoami_keys_secrets_audit(self):
        who = ok("GET", "/v1/whoami")
        self.assertEqual((who["role"], who["authMethod"]), ("ROLE_OWNER", "AUTH_METHOD_API_KEY"))
        created = ok("POST", "/v1/apiKeys", {"name": "gw-" + uid(), "role": "ROLE_EDITOR"})
        self.assertTrue(created["key"].startswith("agz_"))
        self.assertEqual(created["apiKey"]["role"], "ROLE_EDITOR")
        listed = ok("GET", "/v1/apiKeys?pageSize=1000")["apiKeys"]
        self.assertIn(created["apiKey"]["id"], [k["id"] for k in listed])
        self.assertNotIn(created["key"], json.dumps(listed))
        self.assertEqual(ok("GET", "/v1/whoami", key=created["key"])["role"], "ROLE_EDITOR")
        revoked = ok("POST", "/v1/apiKeys/%s:revoke" % created["apiKey"]["id"], {})
        self.assertRegex(revoked["revokeTime"], TS_RE)
        self.assertEqual(call("GET", "/v1/whoami", key=created["key"]).status, 401)

        name, value = "gw-secret-" + uid(), "s3cr3t-" + uid()
        rid = "gw-audit-" + uid()
        sec = ok("POST", "/v1/secrets", {"name": name, "value": value}, headers={"X-Request-Id": rid})
        self.assertEqual((sec["name"], "value" in sec), (name, False))
        secrets = call("GET", "/v1/secrets")
        self.assertIn(name, [s["name"] for s in secrets.json["secrets"]])
        self.assertNotIn(value.encode(), secrets.body)
        self.assertEqual(ok("DELETE", "/v1/secrets/" + name), {})
        self.assertNotIn(name, [s["name"] for s in ok("GET", "/v1/secrets").get("secrets", [])])

        # The audit writer batches its rows: the entry lands shortly after the call.
        deadline = time.monotonic() + 15
        while True:
            entries = ok("GET", "/v1/auditLog?pageSize=200&method=/agentz.v1.SystemService/CreateSecret")
            entries = entries.get("entries", [])
            mine = [e for e in entries if e.get("requestId") == rid]
            if mine or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual([e["outcome"] for e in mine], ["OK"], entries[:3])
        self.assertNotIn(value, json.dumps(entries))


class T02Errors(unittest.TestCase):
    def assert_error(self, r, status, code, *words):
        self.assertEqual(r.status, status, r)
        self.assertTrue(r.h("content-type").startswith("application/json"), r)
        body = r.json
        self.assertEqual(set(body), {"code", "message", "details"}, body)
        if code is None:  # a limit the gateway enforces itself: any code, the HTTP status is the contract
            self.assertIsInstance(body["code"], int)
        else:
            self.assertEqual(body["code"], code, body)
        self.assertEqual(body["details"], [])
        for w in words:
            self.assertIn(w, body["message"])

    def test_status_mapping_and_data_unchanged(self):
        a = make_agent(name="gw-err-" + uid())
        b = make_agent(name="gw-err-" + uid())
        path = "/v1/agents/" + a["id"]
        self.assert_error(call("PATCH", path, {"goal": "x", "fooBar": 1}), 400, 3, "fooBar")
        self.assert_error(call("PATCH", path, {"maxIter": "many"}), 400, 3, "maxIter")
        self.assert_error(call("PATCH", path, '{"goal": "x",', headers={"Content-Type": "application/json"}),
                          400, 3, "JSON")
        self.assert_error(call("PATCH", path + "?colour=red", {"goal": "x"}), 400, 3, "colour")
        self.assert_error(call("PATCH", path, {"name": b["name"]}), 409, 6)
        self.assert_error(call("PATCH", path, {"goal": "x" * 70000}), 413, None)
        self.assert_error(call("PATCH", path, {"goal": "x"}, key=None), 401, 16)
        viewer = ok("POST", "/v1/apiKeys", {"name": "viewer-" + uid(), "role": "ROLE_VIEWER"})["key"]
        self.assert_error(call("PATCH", path, {"goal": "x"}, key=viewer), 403, 7)
        self.assert_error(call("POST", "/v1/agents", {"role": "r", "goal": "g", "backstory": "b"}, key=viewer),
                          403, 7)
        self.assertEqual(ok("GET", path, key=viewer), a)  # the viewer reads
        self.assertEqual(ok("GET", path), a)              # nothing changed
        self.assert_error(call("POST", "/v1/agents", {"name": a["name"], "role": "r", "goal": "g",
                                                      "backstory": "b"}), 409, 6)
        self.assertEqual(ok("GET", "/v1/agents?labelSelector=none%3D" + uid()).get("agents"), None)

        self.assert_error(call("GET", "/v1/agents?status=NOPE"), 400, 3, "NOPE")
        self.assert_error(call("GET", "/v1/agents?pageSize=ten"), 400, 3, "pageSize")
        self.assert_error(call("GET", "/v1/agents/" + str(uuid.uuid4())), 404, 5)
        self.assert_error(call("GET", "/v1/nothing/here"), 404, 5)
        r = call("POST", path)
        self.assert_error(r, 405, 12)
        self.assertEqual(r.h("allow"), "GET, PATCH, DELETE")
        self.assert_error(call("GET", "/v1/agents", headers={"X-Huge": "h" * 20000}), 431, None)
        self.assert_error(call("GET", "/v1/agents?labelSelector=" + "a" * 9000), 414, None)
        self.assert_error(call("GET", "/v1/agents/a%2Fb"), 400, 3)
        self.assert_error(call("GET", "/v1/agents/../agents"), 400, 3, "..")
        self.assert_error(call("GET", "/v1/./agents"), 400, 3)
        # A zero timeout has expired: 504 without a call. 1 ms is a real deadline, which a fast
        # server may meet: either the list or 504, nothing else.
        self.assert_error(call("GET", "/v1/agents", headers={"X-Request-Timeout": "0s"}), 504, 4,
                          "deadline exceeded")
        r = call("GET", "/v1/agents", headers={"X-Request-Timeout": "1ms"})
        if r.status != 200:
            self.assert_error(r, 504, 4)
        self.assert_error(call("GET", "/v1/agents", headers={"X-Request-Timeout": "soon"}), 400, 3,
                          "X-Request-Timeout")
        self.assertEqual(call("GET", "/v1/agents", headers={"X-Request-Timeout": "5s"}).status, 200)
        self.assertEqual(ok("GET", path), a)


class T03Headers(unittest.TestCase):
    def test_request_id_echoed_and_generated(self):
        r = call("GET", "/v1/whoami", headers={"X-Request-Id": "gw-rid-1"})
        self.assertEqual(r.h("x-request-id"), "gw-rid-1")
        r2 = call("GET", "/v1/whoami")
        self.assertTrue(r2.h("x-request-id"))
        self.assertNotEqual(r2.h("x-request-id"), call("GET", "/v1/whoami").h("x-request-id"))

    def test_request_id_on_every_response(self):
        # docs/gateway.md: "Every response says X-Request-Id (the server's id of the call, or the
        # X-Request-Id you sent)" -- errors the gateway answers itself included.
        cases = [("GET", "/v1/agents?colour=red"), ("GET", "/v1/nothing"), ("POST", "/v1/whoami"),
                 ("GET", "/healthz")]
        missing = []
        for m, p in cases:
            r = call(m, p, headers={"X-Request-Id": "gw-rid-2"})
            if r.h("x-request-id") != "gw-rid-2":
                missing.append("%s %s -> %d x-request-id=%r" % (m, p, r.status, r.h("x-request-id")))
        r = call("GET", "/v1/agents", headers={"X-Request-Timeout": "1ms", "X-Request-Id": "gw-rid-3"})
        if r.h("x-request-id") != "gw-rid-3":
            missing.append("GET /v1/agents (X-Request-Timeout: 1ms) -> %d x-request-id=%r"
                           % (r.status, r.h("x-request-id")))
        self.assertEqual(missing, [])

    def test_security_headers_cache_and_csp(self):
        api = call("GET", "/v1/whoami")
        page = call("GET", "/", key=None)
        for r in (api, page):
            self.assertEqual(r.h("x-content-type-options"), "nosniff")
            self.assertEqual(r.h("referrer-policy"), "no-referrer")
            self.assertEqual(r.h("x-frame-options"), "DENY")
            self.assertIsNone(r.h("strict-transport-security"))  # plaintext listener
        self.assertEqual(api.h("cache-control"), "no-store")
        self.assertEqual(api.h("content-security-policy"), "default-src 'none'; frame-ancestors 'none'")
        csp = page.h("content-security-policy")
        self.assertIn("default-src 'self'", csp)
        self.assertIn("script-src 'self'", csp)
        self.assertIn("frame-ancestors 'none'", csp)
        self.assertNotIn("unsafe-inline", csp.split("script-src")[1].split(";")[0])

    def test_api_key_header_and_bearer_over_http1_and_http2(self):
        for hdr in ("X-Api-Key: " + KEY, "Authorization: Bearer " + KEY):
            r = call("GET", "/v1/whoami", key=None, headers=dict([hdr.split(": ", 1)]))
            self.assertEqual(r.json["authMethod"], "AUTH_METHOD_API_KEY")
            line, status, h, body = curl("--http2-prior-knowledge", "-H", hdr, "-H", "X-Request-Id: h2-rid",
                                         "http://%s/v1/whoami" % GW)
            self.assertTrue(line.startswith("HTTP/2 200"), line)
            self.assertEqual((json.loads(body)["authMethod"], h.get("x-request-id")),
                             ("AUTH_METHOD_API_KEY", "h2-rid"))
        line, status, _, body = curl("--http2-prior-knowledge", "http://%s/v1/whoami" % GW)
        self.assertEqual(status, 401, body)

    def test_head_on_get_routes(self):
        a = make_agent()
        with contextlib.closing(http.client.HTTPConnection(GW, timeout=TIMEOUT)) as conn:
            g = call("GET", "/v1/agents/" + a["id"], conn=conn)
            h = call("HEAD", "/v1/agents/" + a["id"], conn=conn)
            self.assertEqual((h.status, h.body, int(h.h("content-length"))), (200, b"", len(g.body)))
            # the connection still parses: no body followed the HEAD answer
            self.assertEqual(call("GET", "/v1/agents/" + a["id"], conn=conn).json, a)
            hz = call("HEAD", "/healthz", conn=conn)
            self.assertEqual((hz.status, hz.body), (200, b""))
            hs = call("HEAD", "/assets/app-x.js", conn=conn, key=None)
            self.assertEqual((hs.status, hs.body, int(hs.h("content-length"))), (200, b"", len(APP_JS)))
            self.assertEqual(call("GET", "/healthz", conn=conn).json, {"status": "ok"})


class T04Cors(unittest.TestCase):
    def preflight(self, origin, headers="authorization, content-type"):
        return call("OPTIONS", "/v1/agents", key=None, headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": headers})

    def test_preflight_allowed(self):
        r = self.preflight(ORIGIN)
        self.assertEqual(r.status, 204, r)
        self.assertEqual(r.h("access-control-allow-origin"), ORIGIN)
        self.assertIn("POST", r.h("access-control-allow-methods"))
        allowed = {x.strip() for x in r.h("access-control-allow-headers").split(",")}
        self.assertLessEqual({"authorization", "content-type", "x-api-key", "last-event-id", "x-grpc-web"},
                             allowed)
        self.assertEqual(r.h("access-control-max-age"), "600")

    def test_preflight_refused(self):
        r = self.preflight("http://evil.example.test")
        self.assertEqual((r.status, r.json["code"], r.h("access-control-allow-origin")), (403, 7, None), r)
        self.assertIn("evil.example.test", r.json["message"])
        r = self.preflight(ORIGIN, "authorization, x-evil-header")
        self.assertEqual(r.status, 403, r)
        self.assertIn("x-evil-header", r.json["message"])

    def test_actual_requests(self):
        r = call("GET", "/v1/whoami", headers={"Origin": ORIGIN})
        self.assertEqual((r.status, r.h("access-control-allow-origin")), (200, ORIGIN))
        self.assertIn("Origin", r.h("vary"))
        exposed = {x.strip() for x in r.h("access-control-expose-headers").split(",")}
        self.assertLessEqual({"grpc-status", "grpc-message", "x-request-id", "retry-after"}, exposed)
        r = call("GET", "/v1/whoami", headers={"Origin": "http://evil.example.test"})
        self.assertEqual(r.status, 200)
        for name in ("access-control-allow-origin", "access-control-expose-headers"):
            self.assertIsNone(r.h(name))


class T05Streams(unittest.TestCase):
    def test_watch_task_sse_ids_tokens_and_end(self):
        model = "m-" + uid()
        answer = "".join("token %d; " % i for i in range(30))
        FAKE.on(model, answer=answer, chunk=6, delay=0.6)
        t = ok("POST", "/v1/tasks", {"description": "Stream", "expectedOutput": "text",
                                      "agentId": make_agent(model)["id"]})
        with Stream("/v1/tasks/%s:watch?includeTokens=true" % t["id"]) as s:
            self.assertEqual(s.status, 200)
            self.assertTrue(s.headers["content-type"].startswith("text/event-stream"))
            self.assertEqual(s.headers["cache-control"], "no-store")
            events, end = sse_collect(s)
        self.assertEqual((events[0]["retry"], events[0]["comments"]), ("3000", ["stream open"]))
        self.assertEqual(end, {"code": 0, "message": "", "details": []})
        check_ids(self, events)
        seqs = [int(e["id"]) for e in durable(events)]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))
        last = durable(events)[-1]["data"]
        self.assertEqual(last["taskStatus"]["to"], "TASK_STATUS_SUCCEEDED")
        self.assertRegex(last["time"], TS_RE)
        self.assertEqual("".join(e["data"]["token"]["text"] for e in tokens_of(events)), answer)
        self.assertTrue(all(e["id"] is None for e in tokens_of(events)))

        # Last-Event-ID wins over afterSequence; NDJSON is the default form.
        _, again, end = sse("/v1/tasks/%s:watch?afterSequence=1" % t["id"], headers={"Last-Event-ID": "2"})
        self.assertEqual(([int(e["id"]) for e in durable(again)], end["code"]), (seqs[2:], 0))
        with Stream("/v1/tasks/%s:watch" % t["id"], accept=None) as s:
            self.assertEqual(s.headers["content-type"], "application/x-ndjson")
            lines = list(s.lines())
        self.assertTrue(all(set(l) == {"result"} for l in lines), lines)
        self.assertEqual([int(l["result"]["sequence"]) for l in lines], seqs)

        # access_token: accepted on streams, refused on unary routes.
        status, events, end = sse("/v1/tasks/%s:watch?access_token=%s" % (t["id"], KEY), key=None)
        self.assertEqual((status, len(durable(events)), end["code"]), (200, len(seqs), 0))
        r = call("GET", "/v1/tasks/%s?access_token=%s" % (t["id"], KEY), key=None)
        self.assertEqual(r.status, 400, r)
        self.assertIn("access_token", r.json["message"])

    def test_streams_that_cannot_start_answer_plain_errors(self):
        for path, status, code in (("/v1/runs/nope:watch", 400, 3), ("/v1/tasks/x:watch", 400, 3),
                                   ("/v1/runs/%s:watch" % uuid.uuid4(), 404, 5),
                                   ("/v1/tasks/%s:watch" % uuid.uuid4(), 404, 5)):
            st, _, body = sse(path)
            self.assertEqual((st, body["code"], body["details"]), (status, code, []), path)
        self.assertEqual(sse("/v1/agents:watch", key=None)[0], 401)

    def test_watch_agents_events_and_heartbeats(self):
        model = "m-" + uid()
        FAKE.on(model, answer="busy for a moment", delay=0.3)
        a = make_agent(model)
        with Stream("/v1/agents:watch?agentIds=" + a["id"]) as s:
            self.assertEqual(s.status, 200)
            ok("POST", "/v1/tasks", {"description": "busy", "expectedOutput": "text", "agentId": a["id"]})
            events, _ = sse_collect(s, stop=lambda e: e["data"] and e["data"].get(
                "agentStatus", {}).get("to") == "AGENT_STATUS_IDLE")
            check_ids(self, events)
            ds = durable(events)
            self.assertEqual([(e["data"]["agentStatus"].get("from"), e["data"]["agentStatus"]["to"])
                              for e in ds], [("AGENT_STATUS_IDLE", "AGENT_STATUS_BUSY"),
                                             ("AGENT_STATUS_BUSY", "AGENT_STATUS_IDLE")])
            self.assertTrue(all(e["data"]["agentId"] == a["id"] for e in ds))
            self.assertEqual(int(ds[1]["id"]), int(ds[0]["id"]) + 1)
            beats, deadline = [], time.monotonic() + 8
            for e in s.events():
                self.assertIsNone(e["data"], e)  # nothing else happens to this agent
                beats += [c for c in e["comments"] if c.startswith("heartbeat ")]
                if len(beats) >= 2 or time.monotonic() > deadline:
                    break
        self.assertGreaterEqual(len(beats), 2, "no heartbeat comments on a quiet stream")
        self.assertRegex(beats[0], r"^heartbeat \d{10}$")

    def test_stream_metrics_sse_is_ephemeral(self):
        with Stream("/v1/metrics:stream?interval=1s") as s:
            got = list(itertools.islice((e for e in s.events() if e["data"] is not None), 2))
        self.assertEqual(len(got), 2)
        for e in got:
            self.assertEqual((e["id"], "metrics" in e["data"], "sequence" in e["data"]), (None, True, False),
                             e)

    def test_failed_stream_ends_with_error_line_and_end_event(self):
        path, timeout = "/v1/agents:watch?labelSelector=none%3D" + uid(), {"X-Request-Timeout": "1500ms"}
        with Stream(path, accept=None, headers=timeout) as s:
            self.assertEqual(s.status, 200)
            lines = list(s.lines())
        self.assertTrue(lines and "error" in lines[-1], lines)
        self.assertEqual(lines[-1]["error"]["code"], 4)
        self.assertTrue(all("result" in l for l in lines[:-1]))
        self.assertEqual(sse(path, headers=timeout)[2]["code"], 4)

    def test_resume_after_abrupt_disconnects(self):
        """The key test: a run streams slowly; the client drops its connection twice mid-run and
        resumes with Last-Event-ID; the durable events are exactly 1..N."""
        model = "m-" + uid()
        FAKE.on(model, answer="".join("w%d " % i for i in range(16)), chunk=3, token_delay=0.06)
        wf = make_workflow(make_agent(model)["id"], steps=3)
        run = ok("POST", "/v1/workflows/%s/runs" % wf["id"], {"inputs": {"topic": "resume"}})
        path = "/v1/runs/%s:watch?includeTokens=true" % run["id"]
        seen, all_events, last = [], [], None
        for attempt in range(2):
            # the second time also with an afterSequence the header must win over
            s = Stream(path + ("&afterSequence=1" if last else ""),
                       headers={"Last-Event-ID": last} if last else None)
            self.assertEqual(s.status, 200)
            n = 0
            for e in s.events():  # two durable events, then cut inside a step's token deltas
                self.assertNotEqual(e["event"], "end", "the run finished before disconnect %d" % attempt)
                all_events.append(e)
                if e["id"]:
                    seen.append(int(e["id"]))
                    last, n = e["id"], n + 1
                elif n >= 2 and tokens_of([e]):
                    break
            s.abort()  # a RST, mid-run
        status, events, end = sse(path, headers={"Last-Event-ID": last})
        all_events += events
        seen += [int(e["id"]) for e in durable(events)]
        check_ids(self, all_events)
        self.assertEqual(seen, list(range(1, len(seen) + 1)), "gap or duplicate across reconnects")
        self.assertEqual(end, {"code": 0, "message": "", "details": []})
        self.assertEqual(durable(all_events)[-1]["data"]["runStatus"]["to"], "RUN_STATUS_SUCCEEDED")
        self.assertEqual(wait_run(run["id"])["status"], "RUN_STATUS_SUCCEEDED")
        self.assertTrue(tokens_of(all_events))

        # The same resume over HTTP/2: the header survives it.
        k = len(seen) - 3
        line, status, h, body = curl("--http2-prior-knowledge", "-N", "-H", "Authorization: Bearer " + KEY,
                                     "-H", "Accept: text/event-stream", "-H", "Last-Event-ID: %d" % k,
                                     "http://%s/v1/runs/%s:watch" % (GW, run["id"]))
        self.assertTrue(line.startswith("HTTP/2 200"), line)
        ids = [int(x) for x in re.findall(rb"^id: (\d+)$", body, re.M)]
        self.assertEqual(ids, list(range(k + 1, len(seen) + 1)))
        self.assertIn(b'event: end\ndata: {"code":0,', body)

    def test_slow_consumer_is_cut_and_resumes(self):
        # 1500 token deltas of 1 KB at about 1000/s: a reader that keeps up sees them all; one that
        # stops reading fills the kernel's buffers, one message in the gateway and the server's
        # queue (QUEUE_LIMIT), and is cut with RESOURCE_EXHAUSTED.
        model, piece = "m-" + uid(), 1000
        answer = "".join(("%05d" % i) * (piece // 5) for i in range(1500))
        FAKE.on(model, answer=answer, chunk=piece, delay=1.0, burst=10, token_delay=0.01)
        run = ok("POST", "/v1/workflows/%s/runs" % make_workflow(make_agent(model)["id"])["id"], {})
        path = "/v1/runs/%s:watch?includeTokens=true" % run["id"]
        fast = {}

        def fast_reader():
            try:
                fast["status"], fast["events"], fast["end"] = sse(path)
            except BaseException as e:  # reported below
                fast["error"] = e

        with Stream(path, small=True) as slow:
            th = threading.Thread(target=fast_reader)
            th.start()
            self.assertEqual(next(e for e in slow.events() if e["id"])["id"], "1")
            th.join(100)  # the slow client reads nothing meanwhile
            self.assertFalse(th.is_alive(), "the fast client did not finish")
            self.assertNotIn("error", fast)
            self.assertEqual(fast["end"]["code"], 0, fast["end"])
            fast_seqs = [int(e["id"]) for e in durable(fast["events"])]
            self.assertEqual(fast_seqs, list(range(1, len(fast_seqs) + 1)))
            self.assertEqual("".join(e["data"]["token"]["text"] for e in tokens_of(fast["events"])), answer,
                             "the fast client missed token deltas")
            self.assertEqual(ok("GET", "/v1/runs/" + run["id"])["status"], "RUN_STATUS_SUCCEEDED")
            events, end = sse_collect(slow)
        self.assertEqual(end["code"], 8, "a client that stopped reading for the whole run was not cut: it "
                         "still got %d of 1500 token deltas of 1 KB, then %r" % (len(tokens_of(events)), end))
        # what reached the client after it stopped: the queue, what the kernel buffers on this
        # socket (well under 384 KiB with its MSS of 536) and one message in the gateway
        self.assertLessEqual(len(events), QUEUE_LIMIT + 384 * 1024 // piece + 2,
                             "the gateway buffered the stalled stream")
        m = re.search(r"after_sequence = (\d+)", end["message"])
        self.assertTrue(m, end)
        n = int(m.group(1))
        slow_seqs = [1] + [int(e["id"]) for e in durable(events)]
        self.assertEqual(slow_seqs, list(range(1, n + 1)), "the slow client lost queued events")
        status, rest, end = sse(path.split("?")[0], headers={"Last-Event-ID": str(n)})
        self.assertEqual(end["code"], 0)
        self.assertEqual(slow_seqs + [int(e["id"]) for e in durable(rest)], fast_seqs)


class T06WebSocket(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        model = "m-" + uid()
        FAKE.on(model, answer="websocket answer", chunk=3)
        t = ok("POST", "/v1/tasks", {"description": "ws", "expectedOutput": "text",
                                      "agentId": make_agent(model)["id"]})
        cls.path = "/v1/tasks/%s:watch" % wait_task(t["id"])["id"]

    def test_messages_and_clean_close(self):
        with WS(self.path, protocols=("agentz.v1", "bearer." + KEY)) as w:
            self.assertTrue(w.accept_ok(), (w.status, w.headers))
            self.assertEqual(w.headers.get("sec-websocket-protocol"), "agentz.v1")
            msgs, code, reason = w.run()
        self.assertEqual(code, 1000)
        seqs = [int(m["sequence"]) for m in msgs]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))
        self.assertEqual(msgs[-1]["taskStatus"]["to"], "TASK_STATUS_SUCCEEDED")

    def test_error_then_close_4016(self):
        with WS(self.path) as w:
            self.assertEqual(w.status, 101)
            msgs, code, reason = w.run()
        self.assertEqual([m["error"]["code"] for m in msgs], [16])
        self.assertEqual(code, 4016)
        self.assertTrue(reason)

    def test_refusals(self):
        with WS(self.path, origin="http://evil.example.test") as w:
            self.assertEqual(w.status, 403)
            self.assertNotIn("sec-websocket-accept", w.headers)
            self.assertEqual(json.loads(w.http_body())["code"], 7)
        with WS(self.path, origin=ORIGIN, protocols=("agentz.v1", "bearer." + KEY)) as w:
            self.assertEqual(w.status, 101)  # an allowed origin
        with WS(self.path.split(":watch")[0], protocols=("agentz.v1", "bearer." + KEY)) as w:
            self.assertEqual(w.status, 400)
            self.assertEqual(json.loads(w.http_body())["code"], 3)

    def test_broken_client_frames_close_the_connection(self):
        sel = "none%3D" + uid()
        cases = {
            "bad opcode": lambda w: w.send_frame(0x3, b"x"),
            "unmasked frame": lambda w: w.send_frame(0x1, b"hello", mask=False),
            "oversized length": lambda w: w.sock.sendall(bytes([0x81, 0xFF]) + struct.pack("!Q", 1 << 62)
                                                         + os.urandom(4) + b"abc"),
        }
        for name, breaker in cases.items():
            with WS("/v1/agents:watch?labelSelector=" + sel, protocols=("agentz.v1", "bearer." + KEY)) as w:
                self.assertEqual(w.status, 101, name)
                w.send_frame(0x1, b'{"ignored": true}')  # client messages are ignored
                breaker(w)
                self.assertTrue(w.closed_by_server(), "%s: the server kept the connection" % name)
            self.assertEqual(call("GET", "/healthz", key=None).status, 200, name)


class T07GrpcWeb(unittest.TestCase):
    def test_unary_binary_and_text_keep_alive(self):
        a = make_agent(name="gw-web-" + uid())
        with contextlib.closing(http.client.HTTPConnection(GW, timeout=TIMEOUT)) as conn:
            for text in (False, True):
                r, frames = grpcweb("/agentz.v1.AgentService/GetAgent", pb_string(1, a["id"]), text, conn)
                self.assertEqual(r.status, 200, r)
                self.assertTrue(r.h("content-type").startswith(
                    "application/grpc-web-text" if text else "application/grpc-web"))
                self.assertIsNotNone(r.h("content-length"))
                self.assertEqual([f for f, _ in frames], [0, 0x80])
                agent = pb_fields(frames[0][1])
                self.assertEqual((agent[1], agent[2]), ([a["id"].encode()], [a["name"].encode()]))
                self.assertEqual(frames[1][1]["grpc-status"], "0")
                sock = conn.sock
                r, frames = grpcweb("/agentz.v1.AgentService/ListAgents", pb_varint(1 << 3) + pb_varint(1000),
                                    text, conn)
                self.assertIs(conn.sock, sock, "the connection did not stay open")
                self.assertEqual(frames[-1][1]["grpc-status"], "0")
                ids = [pb_fields(x)[1][0].decode() for x in pb_fields(frames[0][1])[1]]
                self.assertIn(a["id"], ids)

    def test_trailers_only_errors(self):
        r, frames = grpcweb("/agentz.v1.AgentService/GetAgent", pb_string(1, str(uuid.uuid4())))
        self.assertEqual((r.status, r.h("grpc-status"), frames), (200, "5", []))
        self.assertIn("not found", r.h("grpc-message"))
        r, frames = grpcweb("/agentz.v1.AgentService/NoSuchMethod", b"")
        self.assertEqual((r.status, r.h("grpc-status"), frames), (200, "12", []))
        self.assertTrue(r.h("grpc-message"))
        r, _ = grpcweb("/agentz.v1.AgentService/ListAgents", b"", key=None)
        self.assertEqual(r.h("grpc-status"), "16")
        r, _ = grpcweb("/agentz.v1.AgentService/GetAgent", None, raw_body=struct.pack("!BI", 0, 10) + b"abc")
        self.assertEqual((r.status, r.h("grpc-status")), (200, "3"))
        r = call("GET", "/agentz.v1.AgentService/ListAgents",
                 headers={"Content-Type": "application/grpc-web"})
        self.assertEqual(r.status, 405)

    def test_server_streaming_watch_task(self):
        model = "m-" + uid()
        FAKE.on(model, answer="grpc-web stream", chunk=4)
        agent = make_agent(model)
        t = ok("POST", "/v1/tasks", {"description": "gw", "expectedOutput": "text", "agentId": agent["id"]})
        wait_task(t["id"])
        for text in (False, True):
            r, frames = grpcweb("/agentz.v1.TaskService/WatchTask", pb_string(1, t["id"]), text)
            self.assertEqual(r.status, 200, r)
            self.assertGreaterEqual(len(frames), 3)
            self.assertEqual([f for f, _ in frames], [0] * (len(frames) - 1) + [0x80])
            self.assertEqual(frames[-1][1]["grpc-status"], "0")
            seqs = [pb_fields(p)[1][0] for _, p in frames[:-1]]
            self.assertEqual(seqs, list(range(1, len(seqs) + 1)))


class T08Misc(unittest.TestCase):
    def test_probes_config_and_openapi(self):
        with open(os.path.join(DATA_DIR, "admin.key")) as f:
            self.assertEqual(f.read().strip(), KEY, "the web UI line's #token is not DATA/admin.key")
        self.assertEqual(call("GET", "/healthz", key=None).json, {"status": "ok"})
        r = call("GET", "/readyz", key=None)
        self.assertEqual((r.status, r.json["status"]), (200, "SERVING"))
        cfg = call("GET", "/ui/config.json", key=None).json
        self.assertEqual((bool(cfg["version"]), cfg["clerkPublishableKey"]), (True, None))
        doc = call("GET", "/openapi.json", key=None).json
        self.assertTrue(doc["openapi"].startswith("3.1"))
        want = """get,post /v1/agents; get,delete /v1/agents/{id}; patch /v1/agents/{agent.id};
            get /v1/agents:watch; get,post /v1/tasks; get /v1/tasks/{id}; post /v1/tasks/{id}:cancel;
            post /v1/tasks/{id}:retry; get /v1/tasks/{task_id}/attempts; get /v1/tasks:stats;
            get /v1/tasks/{task_id}:watch; get,post /v1/workflows; get,delete /v1/workflows/{id};
            patch /v1/workflows/{workflow.id}; get /v1/workflows/{id}/versions; get /v1/templates;
            post /v1/templates/{template_id}:instantiate; get,post /v1/workflows/{workflow_id}/runs;
            get /v1/runs; get /v1/runs/{id}; post /v1/runs/{id}:cancel; post /v1/runs/{id}:resume;
            get /v1/runs/{run_id}:watch; get /v1/workflows/{workflow_id}/analytics; get /v1/whoami;
            get,post /v1/apiKeys; post /v1/apiKeys/{id}:revoke; get,post /v1/secrets;
            delete /v1/secrets/{name}; get /v1/auditLog; get /v1/metrics:stream"""
        want = {p: ms.split(",") for ms, p in (x.split() for x in want.split(";"))}
        missing = ["%s %s" % (m, p) for p, ms in want.items() for m in ms if m not in doc["paths"].get(p, {})]
        self.assertEqual(missing, [])
        watch = doc["paths"]["/v1/runs/{run_id}:watch"]["get"]["responses"]
        self.assertIn("text/event-stream", json.dumps(watch))

    def test_static_files(self):
        with contextlib.closing(http.client.HTTPConnection(GW, timeout=TIMEOUT)) as conn:
            r = call("GET", "/assets/app-x.js", key=None, conn=conn, headers={"Accept-Encoding": "gzip"})
            self.assertEqual((r.status, r.h("content-encoding")), (200, "gzip"))
            self.assertEqual(gzip.decompress(r.body), APP_JS)
            self.assertLess(len(r.body), len(APP_JS))
            self.assertEqual(r.h("cache-control"), "public, max-age=31536000, immutable")
            etag = r.h("etag")
            r = call("GET", "/assets/app-x.js", key=None, conn=conn)
            self.assertEqual((r.body, r.h("content-encoding")), (APP_JS, None))
            r = call("GET", "/assets/app-x.js", key=None, conn=conn, headers={"If-None-Match": etag})
            self.assertEqual((r.status, r.body), (304, b""))
            for p in ("/", "/index.html", "/runs/123"):
                r = call("GET", p, key=None, conn=conn)
                self.assertEqual((r.status, r.body), (200, INDEX_HTML), p)
                self.assertTrue(r.h("content-type").startswith("text/html"))
                self.assertEqual(r.h("cache-control"), "no-cache")
            r = call("GET", "/missing.js", key=None, conn=conn)
            self.assertEqual((r.status, r.json["code"]), (404, 5))

    def test_readyz_503_when_the_upstream_is_down(self):
        gw = Proc([GATEWAY_BIN, "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--web-dir", ""],
                  "python-gateway-down.log")
        try:
            m = gw.wait_line(GW_READY_RE, timeout=20)
            host = m.group(2)
            self.assertEqual(call("GET", "/healthz", key=None, host=host).status, 200)
            r = call("GET", "/readyz", key=None, host=host)
            self.assertEqual((r.status, r.json["status"]), (503, "UNAVAILABLE"), r)
            r = call("GET", "/v1/whoami", host=host)
            self.assertEqual((r.status, r.json["code"]), (503, 14))
        finally:
            rc = gw.stop()
        self.assertEqual(rc, 0, gw.log_tail())


    def test_slow_requests_get_408(self):
        """A request that does not arrive within AGENTZ_GATEWAY_REQUEST_TIMEOUT is 408 with a JSON
        status (headers or body too slow); an idle keep-alive connection is just closed."""
        gw = Proc([GATEWAY_BIN, "--listen", "127.0.0.1:0", "--upstream", GRPC_ADDR, "--web-dir", "",
                   "--request-timeout", "2s"], "python-gateway-408.log")
        try:
            host = gw.wait_line(GW_READY_RE, timeout=20).group(2)
            h, port = host.rsplit(":", 1)

            def slow(data):
                s = socket.create_connection((h, int(port)), timeout=10)
                t0 = time.monotonic()
                s.sendall(data)
                out = b""
                while True:
                    b = s.recv(4096)
                    if not b:
                        break
                    out += b
                s.close()
                return time.monotonic() - t0, out

            for name, data in (("headers", b"GET /v1/whoami HTTP/1.1\r\nHost: x\r\nX-Api-Key: k"),
                               ("body", b"POST /v1/agents HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                        b"application/json\r\nContent-Length: 100\r\n\r\n{\"name\":")):
                took, out = slow(data)
                head, _, body = out.partition(b"\r\n\r\n")
                self.assertTrue(head.startswith(b"HTTP/1.1 408 "), (name, out))
                self.assertIn(b"connection: close", head.lower(), name)
                st = json.loads(body)
                self.assertEqual(st["code"], 4, name)
                self.assertIn("AGENTZ_GATEWAY_REQUEST_TIMEOUT", st["message"], name)
                self.assertTrue(1.8 <= took <= 4.5, (name, took))
            took, out = slow(b"")
            self.assertEqual(out, b"", "an idle connection is closed without an answer")
            self.assertTrue(took <= 6, took)
            # The gateway goes on serving prompt requests.
            self.assertEqual(call("GET", "/v1/whoami", host=host).status, 200)
        finally:
            rc = gw.stop()
        self.assertEqual(rc, 0, gw.log_tail())


class T09Tls(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="agentz-pygw-tls-")
        cls.cert, key = os.path.join(cls.dir, "gw.pem"), os.path.join(cls.dir, "gw.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", cls.cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
        cls.gw = Proc([GATEWAY_BIN, "--listen", "127.0.0.1:0", "--tls-cert", cls.cert, "--tls-key", key,
                       "--upstream", GRPC_ADDR, "--web-dir", WEB_DIR], "python-gateway-tls.log")
        m = cls.gw.wait_line(GW_READY_RE, timeout=20)
        assert m.group(1) == "https"
        cls.host = m.group(2)

    @classmethod
    def tearDownClass(cls):
        rc = cls.gw.stop() if cls.gw.p.returncode is None else 0
        shutil.rmtree(cls.dir, ignore_errors=True)
        if rc != 0:
            raise AssertionError("agentz-gateway exited %d; log tail:\n%s" % (rc, cls.gw.log_tail()))

    def test_https_alpn_hsts_and_http2_credentials(self):
        alpn = ssl.create_default_context(cafile=self.cert)
        alpn.set_alpn_protocols(["h2", "http/1.1"])
        h, p = self.host.rsplit(":", 1)
        with socket.create_connection((h, int(p)), timeout=TIMEOUT) as raw:
            with alpn.wrap_socket(raw, server_hostname=h) as tls:
                self.assertEqual(tls.selected_alpn_protocol(), "h2")
                self.assertIn(tls.version(), ("TLSv1.2", "TLSv1.3"))
        ctx = ssl.create_default_context(cafile=self.cert)  # HTTP/1.1 by ALPN
        with contextlib.closing(http.client.HTTPSConnection(self.host, timeout=TIMEOUT, context=ctx)) as conn:
            r = call("GET", "/v1/whoami", conn=conn)
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.h("strict-transport-security").startswith("max-age="))
            r = call("GET", "/", conn=conn, key=None)
            self.assertEqual(r.body, INDEX_HTML)
            self.assertTrue(r.h("strict-transport-security"))
        for hdr in ("X-Api-Key: " + KEY, "Authorization: Bearer " + KEY):
            line, status, hh, body = curl("--http2", "-k", "-H", hdr, "-H", "X-Request-Id: tls-rid",
                                          "https://%s/v1/whoami" % self.host)
            self.assertTrue(line.startswith("HTTP/2 200"), line)
            self.assertEqual((json.loads(body)["authMethod"], hh.get("x-request-id")),
                             ("AUTH_METHOD_API_KEY", "tls-rid"))
            self.assertTrue(hh.get("strict-transport-security"))
        self.assertEqual(curl("--http2", "-k", "https://%s/v1/whoami" % self.host)[1], 401)

    def test_sse_resume_over_tls_http2(self):
        model = "m-" + uid()
        FAKE.on(model, answer="tls stream answer", chunk=4)
        agent = make_agent(model)
        t = ok("POST", "/v1/tasks", {"description": "tls", "expectedOutput": "text", "agentId": agent["id"]})
        wait_task(t["id"])
        line, status, _, body = curl("--http2", "-k", "-N", "-H", "X-Api-Key: " + KEY, "-H",
                                     "Accept: text/event-stream", "-H", "Last-Event-ID: 1",
                                     "https://%s/v1/tasks/%s:watch" % (self.host, t["id"]))
        self.assertTrue(line.startswith("HTTP/2 200"), line)
        ids = [int(x) for x in re.findall(rb"^id: (\d+)$", body, re.M)]
        self.assertTrue(ids and ids[0] == 2, body)
        self.assertEqual(ids, list(range(2, len(ids) + 2)))
        self.assertIn(b'event: end\ndata: {"code":0,', body)


    def test_reset_tls_connections_are_released(self):
        """TLS clients that reset their connections (mid-stream or idle) leave no descriptor behind."""
        fds = lambda: len(os.listdir("/proc/%d/fd" % self.gw.p.pid))
        tls = ssl.create_default_context(cafile=self.cert)

        def reset_streams(n):
            for _ in range(n):
                s = Stream("/v1/agents:watch?labelSelector=none%3D" + uid(), host=self.host, tls=tls)
                self.assertEqual(s.status, 200)
                s.abort()  # SO_LINGER 0: an RST

        def reset_idle(n):
            h, p = self.host.rsplit(":", 1)
            for _ in range(n):
                sock = tls.wrap_socket(socket.create_connection((h, int(p)), timeout=TIMEOUT), server_hostname=h)
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                got = b""
                while b"\r\n\r\n" not in got:
                    got += sock.recv(4096)
                self.assertTrue(got.startswith(b"HTTP/1.1 200"), got)
                time.sleep(0.05)  # the connection waits for its next request
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()

        reset_streams(1)  # the upstream's stream connection is made once, then shared
        time.sleep(3)
        base = fds()
        reset_streams(20)
        reset_idle(20)
        wait_for(lambda: fds() <= base, timeout=10,
                 what="the gateway to release 40 reset TLS connections (%d descriptors, %d before)" % (fds(), base))

    def test_zz_sigterm_ends_streams_with_unavailable(self):
        """Last of the class: SIGTERM to the standalone gateway with an open SSE stream."""
        with Stream("/v1/agents:watch?labelSelector=none%3D" + uid(), host=self.host,
                    tls=ssl.create_default_context(cafile=self.cert)) as s:
            self.assertEqual(s.status, 200)
            self.assertTrue(s.headers.get("strict-transport-security"))
            next(s.events())
            self.gw.p.send_signal(signal.SIGTERM)
            _, end = sse_collect(s)
        self.assertEqual(self.gw.stop(), 0, self.gw.log_tail())
        self.assertEqual(end["code"], 14, end)
        self.assertIn("after_sequence", end["message"], "docs/gateway.md: the shutdown status names the "
                      "after_sequence to resume from")


class T99Shutdown(unittest.TestCase):
    maxDiff = None

    def test_sigterm_ends_open_streams_and_exits_0(self):
        """Last: SIGTERM to agentzd with a quiet SSE stream, a WebSocket and a client that stopped
        reading a flooded stream."""
        model = "m-" + uid()
        FAKE.on(model, answer="x" * 1000000, chunk=1000, delay=0.5, burst=10, token_delay=0.01)
        t = ok("POST", "/v1/tasks", {"description": "flood", "expectedOutput": "text",
                                      "agentId": make_agent(model)["id"]})
        stalled = Stream("/v1/tasks/%s:watch?includeTokens=true" % t["id"], small=True)
        sel = "none%3D" + uid()
        s = Stream("/v1/agents:watch?labelSelector=" + sel)
        w = WS("/v1/agents:watch?labelSelector=" + sel, protocols=("agentz.v1", "bearer." + KEY))
        problems = []
        try:
            self.assertEqual((stalled.status, s.status, w.status), (200, 200, 101))
            next(s.events())  # the stream is open
            wait_task(t["id"])  # the stalled client has a backlog now
            AGENTZ.p.send_signal(signal.SIGTERM)
            _, end = sse_collect(s)
            if not end or end["code"] != 14:
                problems.append("SSE: event: end with code 14 expected, got %r" % end)
            elif "after_sequence" not in end["message"]:
                problems.append("SSE: the UNAVAILABLE message names no after_sequence: %r" % end)
            _, code, reason = w.run()
            if code != 4014:
                problems.append("WebSocket: close 4014 expected, got %r %r" % (code, reason))
        finally:
            s.close()
            w.close()
            try:
                rc, proc = stop_agentzd()  # the stalled client is still connected meanwhile
            finally:
                stalled.close()
        if rc != 0:
            problems.append("agentzd exited %d after SIGTERM; log tail:\n%s" % (rc, proc.log_tail(5)))
        self.assertEqual(problems, [])


if __name__ == "__main__":
    unittest.main()
