"""Prometheus /metrics and JSON logs (docs/metrics.md "Prometheus", docs/operations.md "Logs")
through clients we did not write: http.client scrapes, grpcio calls, REST through the gateway.

    AGENTZD=build/bin/agentzd AGENTZ_TEST_DIR=/tmp/agentz-test \\
        /usr/bin/python3 -m unittest tests/python/test_prometheus.py -v

setUpModule starts build/bin/agentz-fakellm and one `agentzd --roles api,worker,gateway
--log-format json --metrics-listen 127.0.0.1:0` with its embedded PostgreSQL/Redis under
$AGENTZ_TEST_DIR/python-prometheus. Every scrape is parsed with the strict parser below (every
line well formed, every sample's family typed, histogram buckets cumulative and ending in +Inf
equal to _count). One test starts agentz-gateway standalone in front of it.
"""

import http.client
import json
import math
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
import unittest
import uuid

import grpc

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENTZD = os.environ.get("AGENTZD") or os.path.join(REPO, "build", "bin", "agentzd")
BIN = os.path.dirname(os.path.abspath(AGENTZD))
TEST_DIR = os.environ.get("AGENTZ_TEST_DIR") or os.path.join(REPO, "build")
READY_RE = re.compile(r"AGENTZ is running: gRPC at (\S+)")
METRICS_RE = re.compile(r"^metrics: http://([^/]+)/metrics$")
WEB_RE = re.compile(r"web UI: http://([^/]+)/#token=(\S+)")
FAKE_RE = re.compile(r"fakellm listening on (\S+)")
GW_READY_RE = re.compile(r"agentz-gateway is running: http://(\S+) ")
TIMEOUT = 30.0

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = "00-%s-%s-01" % (TRACE_ID, SPAN_ID)

AGENTZ = FAKE = None
GRPC_ADDR = METRICS = GW = KEY = FAKE_URL = DATA_DIR = None


class Proc:
    """A child whose stdout lines are collected; stderr goes to a log file."""

    def __init__(self, argv, log_name, env):
        self.log_path = os.path.join(TEST_DIR, log_name)
        with open(self.log_path, "w") as log:
            self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=log, env=env, text=True)
        self.lines = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in iter(self.p.stdout.readline, ""):
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def log_tail(self, n=30):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
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


def _env():
    drop = ("AGENTZ_DATABASE_URL", "AGENTZ_REDIS_URL", "AGENTZ_LLM_BASE_URL", "AGENTZ_LLM_API_KEY",
            "AGENTZ_LLM_MODEL", "AGENTZ_LLM_PROVIDER", "OPENAI_API_KEY", "OPENAI_BASE_URL",
            "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "AGENTZ_ALLOW_PRIVATE_NETWORKS", "AGENTZ_ROLES",
            "AGENTZ_LOG_FORMAT", "AGENTZ_METRICS_LISTEN", "AGENTZ_LOG_LEVEL")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("AGENTZ_GATEWAY_")}
    for k in ("AGENTZ_RATE_LIMIT", "AGENTZ_RATE_LIMIT_WORKSPACE", "AGENTZ_RATE_LIMIT_EXPENSIVE"):
        env[k] = "0"
    return env


def reap_embedded(data_dir):
    """After an agentzd that did not exit cleanly: stops the PostgreSQL and Redis it left."""
    for f in ("pg/postmaster.pid", "run/redis.pid"):
        try:
            with open(os.path.join(data_dir, f)) as fh:
                pid = int(fh.readline())
            with open("/proc/%d/cmdline" % pid, "rb") as fh:
                if data_dir.encode() in fh.read():
                    os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass


def setUpModule():
    global AGENTZ, FAKE, GRPC_ADDR, METRICS, GW, KEY, FAKE_URL, DATA_DIR
    if not os.access(AGENTZD, os.X_OK):
        raise RuntimeError("agentzd not found at %s (set AGENTZD)" % AGENTZD)
    FAKE = Proc([os.path.join(BIN, "agentz-fakellm"), "--text", "metrics are moving"],
                "python-prometheus-fakellm.log", _env())
    FAKE_URL = FAKE.wait_line(FAKE_RE, timeout=10).group(1)
    DATA_DIR = os.path.join(os.path.abspath(TEST_DIR), "python-prometheus")
    os.makedirs(DATA_DIR, exist_ok=True)
    AGENTZ = Proc([AGENTZD, "--roles", "api,worker,gateway", "--data-dir", DATA_DIR,
                   "--listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0",
                   "--metrics-listen", "127.0.0.1:0", "--log-format", "json"],
                  "python-prometheus-agentzd.log", _env())
    try:
        GRPC_ADDR = AGENTZ.wait_line(READY_RE).group(1)
        METRICS = AGENTZ.wait_line(METRICS_RE, timeout=10).group(1)
        GW, KEY = AGENTZ.wait_line(WEB_RE, timeout=10).groups()
    except BaseException:
        reap_embedded(DATA_DIR)
        FAKE.stop()
        raise


def tearDownModule():
    if FAKE is not None:
        FAKE.stop()
    if AGENTZ is not None:
        rc = AGENTZ.stop()
        if rc != 0:
            reap_embedded(DATA_DIR)
            raise AssertionError("agentzd exited %d after SIGTERM; log tail:\n%s" % (rc, AGENTZ.log_tail()))


# --------------------------------------------------------------------------------------------
# a strict parser of the text exposition format 0.0.4

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:\\[\\"n]|[^"\\\n])*)"'
SAMPLE_RE = re.compile(r"^(%s)(?:\{(.*)\})? (\S+)(?: (-?\d+))?$" % NAME)
LABEL_RE = re.compile(LABEL)
VALUE_RE = re.compile(r"^(?:[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|NaN|[+-]Inf)$")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def _unescape(v):
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], v)


def _float(v):
    return {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}[v] if v in ("+Inf", "-Inf", "NaN") else float(v)


def parse(text):
    """{(name, frozenset(labels)): value}, {family: type}; raises AssertionError on anything
    the format does not allow."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    types, helps, samples, done = {}, set(), {}, set()
    current = None
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = "line %d: %r" % (n, line)
        assert line, "empty line at " + where
        if line.startswith("#"):
            m = re.match(r"^# (HELP|TYPE) (%s) (.*)$" % NAME, line)
            assert m, "bad comment " + where
            kind, fam, rest = m.groups()
            if kind == "HELP":
                assert fam not in helps, "second HELP " + where
                assert not re.search(r"\\[^\\n]", rest), "bad HELP escape " + where
                helps.add(fam)
            else:
                assert fam not in types, "second TYPE " + where
                assert rest in TYPES, "unknown type " + where
                types[fam] = rest
            if current != fam:
                assert fam not in done, "family %s split at %s" % (fam, where)
                if current:
                    done.add(current)
                current = fam
            continue
        m = SAMPLE_RE.match(line)
        assert m, "bad sample " + where
        name, body, value = m.group(1), m.group(2), m.group(3)
        assert VALUE_RE.match(value), "bad value " + where
        labels = {}
        pos = 0
        while body is not None and pos < len(body):
            lm = LABEL_RE.match(body, pos)
            assert lm, "bad label " + where
            assert lm.group(1) not in labels, "repeated label " + where
            labels[lm.group(1)] = _unescape(lm.group(2))
            pos = lm.end()
            if pos < len(body):
                assert body[pos] == ",", "bad label separator " + where
                pos += 1
        fam = name
        if current and types.get(current) == "histogram" and name in (current + "_bucket", current + "_sum", current + "_count"):
            fam = current
        assert fam == current and fam in types, "sample of an untyped or other family at " + where
        key = (name, frozenset(labels.items()))
        assert key not in samples, "duplicate series " + where
        samples[key] = _float(value)
    # Histograms: per series, buckets cumulative in le order, ending with +Inf == _count.
    for fam, t in types.items():
        if t != "histogram":
            continue
        groups = {}
        for (name, labels), v in samples.items():
            if name == fam + "_bucket":
                d = dict(labels)
                le = d.pop("le")
                groups.setdefault(frozenset(d.items()), []).append((_float(le), v))
        for base, buckets in groups.items():
            buckets.sort()
            counts = [v for _, v in buckets]
            assert counts == sorted(counts), "%s%s: buckets not cumulative" % (fam, dict(base))
            assert buckets[-1][0] == math.inf, "%s%s: no +Inf bucket" % (fam, dict(base))
            assert samples.get((fam + "_count", base)) == buckets[-1][1], "%s: +Inf != _count" % fam
            assert (fam + "_sum", base) in samples, "%s: no _sum" % fam
    return samples, types


def scrape(addr=None):
    c = http.client.HTTPConnection(addr or METRICS, timeout=TIMEOUT)
    try:
        c.request("GET", "/metrics")
        r = c.getresponse()
        body = r.read().decode()
        assert r.status == 200, (r.status, body[:200])
        assert r.getheader("Content-Type", "").startswith("text/plain; version=0.0.4"), r.getheader("Content-Type")
        return parse(body)[0]
    finally:
        c.close()


def val(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def rest(method, path, body=None, headers=None):
    h = {"Authorization": "Bearer " + KEY}
    if body is not None:
        body = json.dumps(body)
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    c = http.client.HTTPConnection(GW, timeout=TIMEOUT)
    try:
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        return r.status, json.loads(data) if data else None
    finally:
        c.close()


def log_lines():
    """agentzd's log lines, each of which must be one JSON object. Lines libraries write to
    stderr themselves (gRPC core's, say) are not agentzd's and are skipped."""
    out = []
    with open(AGENTZ.log_path, errors="replace") as f:
        for line in f:
            assert not line.startswith("ts="), "a logfmt line with --log-format json: %r" % line
            if line.startswith("{"):
                out.append(json.loads(line))
    return out


# --------------------------------------------------------------------------------------------

class PrometheusTest(unittest.TestCase):

    def test_values_move(self):
        before = scrape()
        self.assertEqual(val(before, "agentz_build_info", version="0.1.0", role="api,worker,gateway"), 1)
        for name in ("process_resident_memory_bytes", "process_open_fds", "process_cpu_seconds_total",
                     "process_start_time_seconds"):
            self.assertGreater(val(before, name), 0, name)
        self.assertAlmostEqual(val(before, "process_start_time_seconds"), time.time(), delta=600)
        create = "/agentz.v1.AgentService/CreateAgent"

        status, agent = rest("POST", "/v1/agents", {
            "role": "Metrics", "goal": "Move the counters", "backstory": "Prometheus suite.",
            "llm": {"provider": "openai", "model": "m-" + uuid.uuid4().hex[:8], "baseUrl": FAKE_URL}})
        self.assertEqual(status, 200, agent)
        status, task = rest("POST", "/v1/tasks", {"description": "Say something", "expectedOutput": "text",
                                                  "agentId": agent["id"]})
        self.assertEqual(status, 200, task)
        deadline = time.monotonic() + 30
        while True:
            status, t = rest("GET", "/v1/tasks/" + task["id"])
            if t.get("status") in ("TASK_STATUS_SUCCEEDED", "TASK_STATUS_FAILED", "TASK_STATUS_CANCELLED"):
                break
            self.assertLess(time.monotonic(), deadline, "task did not finish: %r" % t)
            time.sleep(0.1)
        self.assertEqual(t["status"], "TASK_STATUS_SUCCEEDED", t)
        status, err = rest("GET", "/v1/agents/" + str(uuid.uuid4()))
        self.assertEqual(status, 404, err)

        # The task gauges are cached for a second, and a call is counted when the server frees
        # it, just after its client saw the status: poll until both show.
        get = dict(method="/agentz.v1.AgentService/GetAgent", code="NOT_FOUND")
        deadline = time.monotonic() + 10
        while True:
            after = scrape()
            if (val(after, "agentz_tasks", state="succeeded") > val(before, "agentz_tasks", state="succeeded") and
                    val(after, "agentz_rpc_requests_total", **get) > val(before, "agentz_rpc_requests_total", **get)):
                break
            self.assertLess(time.monotonic(), deadline, "agentz_tasks{state=succeeded} or GetAgent NOT_FOUND did not move")
            time.sleep(0.3)

        def delta(name, **labels):
            return val(after, name, **labels) - val(before, name, **labels)

        self.assertEqual(delta("agentz_rpc_requests_total", method=create, code="OK"), 1)
        self.assertEqual(delta("agentz_rpc_duration_seconds_count", method=create), 1)
        self.assertGreater(delta("agentz_rpc_duration_seconds_sum", method=create), 0)
        self.assertEqual(delta("agentz_rpc_requests_total", **get), 1)
        self.assertGreaterEqual(delta("agentz_rpc_requests_total", method="/agentz.v1.TaskService/GetTask",
                                      code="OK"), 1)
        self.assertEqual(delta("agentz_tasks", state="succeeded"), 1)
        self.assertIn(("agentz_tasks_queued", frozenset()), after)
        self.assertGreater(delta("agentz_llm_tokens_total", provider="openai", kind="prompt"), 0)
        self.assertGreater(delta("agentz_llm_tokens_total", provider="openai", kind="completion"), 0)
        self.assertGreaterEqual(delta("agentz_llm_request_duration_seconds_count", provider="openai"), 1)
        self.assertEqual(val(after, "agentz_worker_inflight_calls"), 0)
        self.assertEqual(delta("agentz_http_requests_total", route="/v1/agents", method="POST", code="200"), 1)
        self.assertEqual(delta("agentz_http_requests_total", route="/v1/agents/{id}", method="GET", code="404"), 1)
        self.assertEqual(delta("agentz_http_duration_seconds_count", route="/v1/tasks"), 1)
        busy = val(after, "agentz_pg_pool_connections", state="busy")
        idle = val(after, "agentz_pg_pool_connections", state="idle")
        self.assertIn(("agentz_pg_pool_connections", frozenset({("state", "idle")})), after)
        self.assertEqual(busy + idle, 8)  # --db-pool-size default
        self.assertGreaterEqual(busy, 0)
        self.assertGreater(delta("agentz_pg_pool_wait_seconds_count"), 0)
        self.assertGreaterEqual(val(after, "agentz_outbox_pending"), 0)
        self.assertGreaterEqual(val(after, "agentz_outbox_lag_seconds"), 0)
        self.assertEqual(val(after, "agentz_streams_open", kind="watch"), 0)
        self.assertIn(("agentz_redis_errors_total", frozenset()), after)

    def test_not_metrics(self):
        for method, path in (("GET", "/"), ("GET", "/metricsx"), ("POST", "/metrics")):
            c = http.client.HTTPConnection(METRICS, timeout=TIMEOUT)
            c.request(method, path, body=b"" if method == "POST" else None)
            r = c.getresponse()
            r.read()
            c.close()
            self.assertEqual(r.status, 404, (method, path))
        c = http.client.HTTPConnection(METRICS, timeout=TIMEOUT)
        c.request("HEAD", "/metrics")
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        self.assertGreater(int(r.getheader("Content-Length")), 100)
        self.assertEqual(r.read(), b"")
        c.close()

    def test_json_log_with_traceparent(self):
        channel = grpc.insecure_channel(GRPC_ADDR)
        try:
            list_agents = channel.unary_unary("/agentz.v1.AgentService/ListAgents")
            rid, bad_rid = "prom-" + uuid.uuid4().hex, "prom-bad-" + uuid.uuid4().hex
            # An empty ListAgentsRequest is zero bytes of protobuf.
            list_agents(b"", timeout=TIMEOUT, metadata=(("authorization", "Bearer " + KEY),
                                                         ("x-request-id", rid), ("traceparent", TRACEPARENT)))
            list_agents(b"", timeout=TIMEOUT, metadata=(("authorization", "Bearer " + KEY),
                                                         ("x-request-id", bad_rid),
                                                         ("traceparent", TRACEPARENT.upper())))
            with self.assertRaises(grpc.RpcError) as e:
                channel.unary_unary("/agentz.v1.Nope/Nothing")(b"", timeout=TIMEOUT, metadata=(
                    ("authorization", "Bearer " + KEY),))
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        finally:
            channel.close()
        # Through the gateway: the HTTP header is forwarded as metadata.
        gw_trace = uuid.uuid4().hex
        status, _ = rest("GET", "/v1/agents", headers={"traceparent": "00-%s-%s-00" % (gw_trace, SPAN_ID),
                                                       "X-Request-Id": "prom-gw-1"})
        self.assertEqual(status, 200)

        deadline = time.monotonic() + 10
        while True:
            lines = [l for l in log_lines() if l.get("msg") == "rpc"]
            by_rid = {l.get("request_id"): l for l in lines}
            if rid in by_rid and bad_rid in by_rid and "prom-gw-1" in by_rid:
                break
            self.assertLess(time.monotonic(), deadline, "rpc log lines missing")
            time.sleep(0.1)
        line = by_rid[rid]
        self.assertEqual(line["method"], "/agentz.v1.AgentService/ListAgents")
        self.assertEqual(line["status"], "OK")
        self.assertEqual(line["trace_id"], TRACE_ID)
        self.assertEqual(line["span_id"], SPAN_ID)
        self.assertEqual(line["level"], "info")
        self.assertRegex(line["workspace"], r"^[0-9a-f-]{36}$")
        self.assertIsInstance(line["duration_ms"], (int, float))
        self.assertTrue(line["peer"].startswith("ipv4:127.0.0.1:"), line["peer"])
        self.assertRegex(line["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertNotIn("trace_id", by_rid[bad_rid])  # upper-case hex is not a traceparent
        self.assertEqual(by_rid["prom-gw-1"]["trace_id"], gw_trace)
        # The gateway's own access line carries it too.
        http_lines = [l for l in log_lines() if l.get("msg") == "http" and l.get("request_id") == "prom-gw-1"]
        self.assertEqual(len(http_lines), 1, http_lines)
        self.assertEqual(http_lines[0]["trace_id"], gw_trace)
        self.assertEqual(http_lines[0]["status"], 200)  # a JSON number
        self.assertTrue(any(l.get("method") == "other" or l.get("status") == "UNIMPLEMENTED" for l in lines))
        after = scrape()
        self.assertGreaterEqual(val(after, "agentz_rpc_requests_total", method="other", code="UNIMPLEMENTED"), 1)

    def test_standalone_gateway(self):
        gw = Proc([os.path.join(BIN, "agentz-gateway"), "--upstream", GRPC_ADDR, "--listen", "127.0.0.1:0",
                   "--metrics-listen", "127.0.0.1:0", "--log-format", "json"],
                  "python-prometheus-gateway.log", _env())
        try:
            addr = gw.wait_line(GW_READY_RE, timeout=20).group(1)
            maddr = gw.wait_line(METRICS_RE, timeout=5).group(1)
            for _ in range(3):
                c = http.client.HTTPConnection(addr, timeout=TIMEOUT)
                c.request("GET", "/healthz")
                self.assertEqual(c.getresponse().status, 200)
                c.close()
            s = scrape(maddr)
            self.assertEqual(val(s, "agentz_build_info", version="0.1.0", role="gateway"), 1)
            self.assertEqual(val(s, "agentz_http_requests_total", route="/healthz", method="GET", code="200"), 3)
            self.assertFalse([k for k in s if k[0].startswith("agentz_rpc_")])
            lines = []
            with open(gw.log_path) as f:
                for l in f:
                    self.assertFalse(l.startswith("ts="), "a logfmt line with --log-format json: %r" % l)
                    if l.startswith("{"):
                        lines.append(json.loads(l))
            self.assertTrue(any("serving prometheus metrics" in l["msg"] for l in lines))
        finally:
            self.assertEqual(gw.stop(), 0)


if __name__ == "__main__":
    unittest.main()
