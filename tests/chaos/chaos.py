#!/usr/bin/python3
"""The fault-injection suite: a topology of real processes on one PostgreSQL and one Redis that
this driver starts itself (an `agentzd --roles api`, two `agentzd --roles worker`, an
`agentz-gateway`), a steady load of tasks and workflow runs from several client threads, watch
streams over gRPC resumed by after_sequence and one SSE stream through the gateway resumed by
Last-Event-ID, and faults injected one after another. After each fault it checks, against the
rows in PostgreSQL, that every task created in that phase ended exactly once (one terminal event,
attempts numbered 1..n with at most one success, failures with their reason), that every
watched stream received each stored event exactly once, that the audit chain verifies, and that
health answered again within the stated bound. It prints a table and exits 1 on any loss.

    tests/chaos/run.sh --short          # CI: every fault once, light load (< 4 min)
    tests/chaos/run.sh --long           # release check: more load, every fault three times
    tests/chaos/run.sh --soak --minutes 60

See tests/chaos/README.md and docs/reliability.md. Runs under Debian's /usr/bin/python3
(python3-grpcio); message classes come from the server's own reflection, nothing generated is
committed. The LLM provider is a test double at the network edge (real HTTP, server-sent
events) whose fault mode the driver switches: ok, 429, 500, hang (timeouts), garbage SSE.
"""

import argparse
import base64
import collections
import http.client
import http.server
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENTZD = os.environ.get("AGENTZD") or os.path.join(REPO, "build", "bin", "agentzd")
GATEWAY = os.path.join(os.path.dirname(os.path.abspath(AGENTZD)), "agentz-gateway")
TEST_DIR = os.environ.get("AGENTZ_TEST_DIR") or os.path.join(REPO, "build")
PG_BIN = "/usr/lib/postgresql/15/bin"
GRPC_PROTO_DIR = "/usr/share/grpc-proto"
READY_RE = re.compile(r"AGENTZ is running: gRPC at (\S+)")
GW_READY_RE = re.compile(r"agentz-gateway is running: http://(\S+) ")

# Bounds this suite asserts (documented in docs/reliability.md).
RECOVERY_BOUND_S = 20.0   # fault injected -> every process healthy again (restart included)
E2E_BOUND_S = 30.0        # fault injected -> a task created after recovery has succeeded
SETTLE_BOUND_S = 60.0     # load stopped -> every task of the phase terminal
WATCH_BOUND_S = 45.0      # load stopped -> every watched stream ended
STALL_RSS_BOUND_KB = 64 * 1024  # growth of the api process while one consumer is stalled
LEASE_S = 3               # AGENTZ_TASK_LEASE_SECONDS for the suite: a killed worker costs this

TERMINAL_TASK = (5, 6, 7)  # succeeded, failed, cancelled (tasks.status)
TERMINAL_RUN = (3, 4, 5)   # succeeded, failed, cancelled (workflow_runs.status)
RETRY_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
               grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
               grpc.StatusCode.RESOURCE_EXHAUSTED)


def _die_with_parent():
    """preexec_fn: the child gets SIGKILL when the driver dies, so no process outlives a crash."""
    import ctypes
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def log(*a):
    print("chaos: " + " ".join(str(x) for x in a), file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return 0


# --------------------------------------------------------------------------------------------
# the LLM provider double: OpenAI chat completions over HTTP/1.0, SSE when asked; fault modes

class FakeHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt, *args):
        pass

    def do_POST(self):
        srv = self.server
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError:
            self.send_error(400, "body is not JSON")
            return
        with srv.lock:
            srv.count += 1
            srv.auth.add(self.headers.get("Authorization") or "")
        mode = srv.mode
        model = body.get("model", "")
        if mode in ("429", "500"):
            out = json.dumps({"error": {"message": "chaos " + mode, "type": "server_error"}}).encode()
            self.send_response(int(mode))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            if mode == "429":
                self.send_header("Retry-After", "1")
            self.end_headers()
            self.wfile.write(out)
            return
        if mode == "hang":  # headers, then nothing until the client's timeout closes it
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.flush()
            end = time.monotonic() + 30
            while time.monotonic() < end and srv.mode == "hang":
                time.sleep(0.1)
            return
        tokens = srv.tokens.get(model)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()

        def event(obj):
            self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")

        def delta(d, finish=None):
            return {"id": "chatcmpl-chaos", "object": "chat.completion.chunk",
                    "created": int(time.time()), "model": model,
                    "choices": [{"index": 0, "delta": d, "finish_reason": finish}]}

        try:
            if mode == "garbage":
                self.wfile.write(b"data: {\"choices\": [{\"delta\": \n\ndata: \x00\xff garbage\n\n"
                                 b"event: what\ndata: [[[\n\n")
                self.wfile.flush()
                return
            event(delta({"role": "assistant", "content": ""}))
            if tokens:
                for i in range(tokens):
                    event(delta({"content": "t%d " % i}))
            else:
                for i in range(6):
                    event(delta({"content": "chaos%d " % i}))
                    self.wfile.flush()
                    time.sleep(srv.token_delay)
            event(delta({}, "stop"))
            event({"id": "chatcmpl-chaos", "object": "chat.completion.chunk",
                   "created": int(time.time()), "model": model, "choices": [],
                   "usage": {"prompt_tokens": 7, "completion_tokens": 6, "total_tokens": 13}})
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass


class FakeProvider:
    def __init__(self, token_delay):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHandler)
        self.httpd.daemon_threads = True
        self.httpd.mode = "ok"
        self.httpd.count = 0
        self.httpd.auth = set()
        self.httpd.tokens = {}
        self.httpd.token_delay = token_delay
        self.httpd.lock = threading.Lock()
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def base_url(self):
        return "http://127.0.0.1:%d/v1" % self.httpd.server_address[1]

    def set_mode(self, mode):
        self.httpd.mode = mode

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------------------------
# PostgreSQL and Redis, started here so that they can be restarted and flushed

class Postgres:
    def __init__(self, root):
        self.dir = os.path.join(root, "pg")
        self.sock = os.path.join(root, "run")
        self.log = os.path.join(root, "log", "postgres.log")
        self.port = free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.url = "postgresql://agentz@127.0.0.1:%d/agentz" % self.port

    def _ctl(self, *args, check=True):
        cmd = self.as_user + [PG_BIN + "/pg_ctl", "-D", self.dir, "-l", self.log, "-w", "-t", "60"] + list(args)
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if check and r.returncode != 0:
            raise RuntimeError("pg_ctl %s failed: %s" % (" ".join(args), r.stdout))
        return r

    def start(self):
        for d in (self.dir, self.sock):
            os.makedirs(d, exist_ok=True)
            if self.as_user:
                shutil.chown(d, "postgres", "postgres")
        if self.as_user:
            shutil.chown(os.path.dirname(self.log), "postgres", "postgres")
        if not os.path.exists(os.path.join(self.dir, "PG_VERSION")):
            subprocess.run(self.as_user + [PG_BIN + "/initdb", "-D", self.dir, "-U", "agentz",
                                           "--auth=trust", "-E", "UTF8", "--no-sync"],
                           check=True, stdout=subprocess.DEVNULL)
        opts = ("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off -c max_connections=300 "
                "-c shared_buffers=64MB" % (self.port, self.sock))
        self._ctl("start", "-o", opts)
        self.psql("postgres", "SELECT 1")
        if self.psql("postgres", "SELECT count(*) FROM pg_database WHERE datname = 'agentz'") == [["0"]]:
            self.psql("postgres", "CREATE DATABASE agentz")

    def restart(self, mode):
        self._ctl("restart", "-m", mode)

    def stop(self):
        self._ctl("stop", "-m", "fast", check=False)

    def psql(self, db, sql):
        """Rows of sql as lists of strings (tab-separated, unaligned); raises on error. The
        statement goes through stdin: after an hour's soak it lists thousands of ids, past what
        argv can hold."""
        r = subprocess.run(["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                            "-h", "127.0.0.1", "-p", str(self.port), "-U", "agentz", "-d", db,
                            "-f", "-"], input=sql, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
        if r.returncode != 0:
            raise RuntimeError("psql: %s: %s" % (sql[:80], r.stderr.strip()))
        return [line.split("\t") for line in r.stdout.splitlines() if line]

    def q(self, sql, tries=60):
        """psql on database agentz, retried while PostgreSQL restarts."""
        for i in range(tries):
            try:
                return self.psql("agentz", sql)
            except RuntimeError:
                if i == tries - 1:
                    raise
                time.sleep(0.5)


class Redis:
    def __init__(self, root):
        self.dir = os.path.join(root, "redis")
        self.log = os.path.join(root, "log", "redis.log")
        self.port = free_port()
        self.url = "redis://127.0.0.1:%d/0" % self.port
        self.proc = None

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
             "--logfile", self.log, "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 20
        while self.cli("PING") != "PONG":
            if time.monotonic() > deadline:
                raise RuntimeError("redis did not start; see " + self.log)
            time.sleep(0.05)

    def cli(self, *args):
        r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port)] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        return r.stdout.strip()

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------------------------------------------
# agentzd and gateway processes (the driver is their supervisor: it restarts what it killed)

class Proc:
    def __init__(self, name, argv, env, log_path, ready_re):
        self.name, self.argv, self.env, self.log_path, self.ready_re = name, argv, env, log_path, ready_re
        self.proc = None
        self.address = None

    def start(self, timeout=60):
        log_f = open(self.log_path, "a")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=log_f, env=self.env, text=True, preexec_fn=_die_with_parent)
        log_f.close()
        found = []
        done = threading.Event()

        def pump(p=self.proc):
            for line in iter(p.stdout.readline, ""):
                m = self.ready_re.search(line)
                if m and not found:
                    found.append(m.group(1))
                    done.set()
            done.set()

        threading.Thread(target=pump, daemon=True).start()
        done.wait(timeout)
        if not found:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("%s did not become ready; see %s" % (self.name, self.log_path))
        self.address = found[0]

    @property
    def pid(self):
        return self.proc.pid if self.proc else 0

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def term(self, timeout=40):
        if not self.alive():
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -999


# --------------------------------------------------------------------------------------------
# gRPC through reflection

def _load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def reflect(channel, symbols):
    gen = tempfile.mkdtemp(prefix="agentz-chaos-")
    try:
        rel = "grpc/reflection/v1/reflection.proto"
        subprocess.run(["protoc", "-I", GRPC_PROTO_DIR, "--python_out=" + gen, rel], check=True)
        pb = _load_module("_az_chaos_reflection_v1_pb2",
                          os.path.join(gen, "grpc/reflection/v1/reflection_pb2.py"))
    finally:
        shutil.rmtree(gen, ignore_errors=True)
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=pb.ServerReflectionRequest.SerializeToString,
        response_deserializer=pb.ServerReflectionResponse.FromString)
    files = {}
    for sym in symbols:
        for resp in call(iter([pb.ServerReflectionRequest(file_containing_symbol=sym)]), timeout=10):
            for raw in resp.file_descriptor_response.file_descriptor_proto:
                fd = descriptor_pb2.FileDescriptorProto()
                fd.ParseFromString(raw)
                files.setdefault(fd.name, fd)
    pool = descriptor_pool.DescriptorPool()
    added = set()

    def add(name):
        if name in added:
            return
        for dep in files[name].dependency:
            add(dep)
        pool.Add(files[name])
        added.add(name)

    for name in list(files):
        add(name)
    return pool


CHANNEL_OPTS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 500), ("grpc.enable_retries", 0)]


class Api:
    def __init__(self, address, key):
        self.address = address
        self.md = (("authorization", "Bearer " + key),)
        self.channel = grpc.insecure_channel(address, options=CHANNEL_OPTS)
        grpc.channel_ready_future(self.channel).result(timeout=20)
        self.pool = reflect(self.channel, ["agentz.v1.AgentService", "agentz.v1.TaskService",
                                           "agentz.v1.WorkflowService", "agentz.v1.SystemService"])
        self.factory = message_factory.MessageFactory(self.pool)
        self.stubs = {}

    def _method(self, service, method, kind):
        k = (service, method, kind)
        if k not in self.stubs:
            sd = self.pool.FindServiceByName(service)
            md = sd.methods_by_name[method]
            req = self.factory.GetPrototype(md.input_type)
            resp = self.factory.GetPrototype(md.output_type)
            mk = self.channel.unary_unary if kind == "unary" else self.channel.unary_stream
            self.stubs[k] = (req, mk("/%s/%s" % (sd.full_name, md.name),
                                     request_serializer=req.SerializeToString,
                                     response_deserializer=resp.FromString))
        return self.stubs[k]

    def call(self, service, method, request, timeout=10):
        req, stub = self._method(service, method, "unary")
        return stub(json_format.ParseDict(request, req()), timeout=timeout, metadata=self.md)

    def call_retrying(self, service, method, request, budget=60):
        """Retries a call (idempotent by its request_id, or a read) while the topology heals."""
        end = time.monotonic() + budget
        while True:
            try:
                return self.call(service, method, request)
            except grpc.RpcError as e:
                if e.code() not in RETRY_CODES or time.monotonic() > end:
                    raise
                time.sleep(0.2)

    def stream(self, service, method, request, timeout=120, channel=None):
        req, stub = self._method(service, method, "stream")
        if channel is not None:
            sd = self.pool.FindServiceByName(service)
            md = sd.methods_by_name[method]
            resp = self.factory.GetPrototype(md.output_type)
            stub = channel.unary_stream("/%s/%s" % (sd.full_name, md.name),
                                        request_serializer=req.SerializeToString,
                                        response_deserializer=resp.FromString)
        return stub(json_format.ParseDict(request, req()), timeout=timeout, metadata=self.md)


def health_serving(address, timeout=1.0):
    """grpc.health.v1.Health/Check for "" is SERVING (status = 1: the bytes 08 01)."""
    try:
        with grpc.insecure_channel(address) as ch:
            check = ch.unary_unary("/grpc.health.v1.Health/Check",
                                   request_serializer=lambda b: b, response_deserializer=lambda b: b)
            return check(b"", timeout=timeout) == b"\x08\x01"
    except grpc.RpcError:
        return False


def http_status(address, path, timeout=1.0):
    host, port = address.rsplit(":", 1)
    try:
        c = http.client.HTTPConnection(host, int(port), timeout=timeout)
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        c.close()
        return r.status
    except OSError:
        return 0


# --------------------------------------------------------------------------------------------
# the suite

class Phase:
    def __init__(self, name):
        self.name = name
        self.tasks = set()      # standalone task ids created (acknowledged)
        self.runs = set()       # run ids started (acknowledged)
        self.watched = {}       # ("run"|"task"|"sse", id) -> [sequence received, ...]
        self.watch_done = set()
        self.errors = []
        self.recovery_s = 0.0
        self.e2e_s = 0.0
        self.lock = threading.Lock()
        self.extra = {}


class Chaos:
    def __init__(self, args):
        self.args = args
        self.root = os.path.join(TEST_DIR, "chaos")
        shutil.rmtree(self.root, ignore_errors=True)
        os.makedirs(os.path.join(self.root, "log"), exist_ok=True)
        os.chmod(self.root, 0o755)
        for d in (TEST_DIR,):
            try:
                os.chmod(d, os.stat(d).st_mode | 0o055)
            except OSError:
                pass
        # A copy of the binaries: the build tree may be relinked while the suite runs.
        bindir = os.path.join(self.root, "bin")
        os.makedirs(bindir)
        self.agentzd = os.path.join(bindir, "agentzd")
        self.gateway = os.path.join(bindir, "agentz-gateway")
        for src, dst in ((AGENTZD, self.agentzd), (GATEWAY, self.gateway)):
            for i in range(60):
                try:
                    shutil.copy2(src, dst)
                    if subprocess.run([dst, "--help"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL).returncode == 0:
                        break
                except OSError:
                    if i == 59:
                        raise
                    time.sleep(1)
        os.chmod(bindir, 0o755)
        self.pg = Postgres(self.root)
        self.redis = Redis(self.root)
        self.fake = FakeProvider(token_delay=args.token_delay)
        self.master_key = base64.b64encode(os.urandom(32)).decode()
        self.provider_secret = "sk-chaos-provider-" + uuid.uuid4().hex
        self.procs = {}
        self.phase = None
        self.active = threading.Event()   # load generators create while set
        self.stop = threading.Event()
        self.watch_q = collections.deque(maxlen=16)
        self.sse_q = collections.deque(maxlen=4)
        self.wq_lock = threading.Lock()
        self.rows = []
        self.samples = []

    # ---- topology

    def env(self, extra=None):
        drop = ("AGENTZ_LLM_BASE_URL", "AGENTZ_LLM_API_KEY", "AGENTZ_LLM_MODEL", "AGENTZ_LLM_PROVIDER",
                "OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
                "AGENTZ_DATA_DIR", "AGENTZ_ROLES", "AGENTZ_GRPC_LISTEN")
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env.update({
            "AGENTZ_DATABASE_URL": self.pg.url, "AGENTZ_REDIS_URL": self.redis.url,
            "AGENTZ_MASTER_KEY": self.master_key, "AGENTZ_ALLOW_PRIVATE_NETWORKS": "127.0.0.0/8",
            "AGENTZ_RATE_LIMIT": "0", "AGENTZ_RATE_LIMIT_WORKSPACE": "0",
            "AGENTZ_RATE_LIMIT_EXPENSIVE": "0", "AGENTZ_TASK_LEASE_SECONDS": str(LEASE_S),
            "AGENTZ_RECONCILE_INTERVAL_MS": "300", "AGENTZ_REPUBLISH_AFTER": "2s",
            "AGENTZ_HEALTH_INTERVAL": "500ms", "AGENTZ_STREAM_HEARTBEAT": "1s",
            "AGENTZ_STREAM_QUEUE_LIMIT": "64", "AGENTZ_SHUTDOWN_GRACE": "3s",
            "AGENTZ_WORKER_SHUTDOWN_GRACE_MS": "2000", "AGENTZ_DB_POOL_SIZE": "6",
            "AGENTZ_LOG_LEVEL": "info",
        })
        env.update(extra or {})
        return env

    def setup(self):
        t0 = time.monotonic()
        self.pg.start()
        self.redis.start()
        api_port = free_port()
        L = lambda n: os.path.join(self.root, "log", n + ".log")
        self.procs["api"] = Proc("api", [self.agentzd, "--roles", "api", "--listen", "127.0.0.1:%d" % api_port],
                                 self.env(), L("api"), READY_RE)
        self.procs["api"].start(timeout=90)
        for i in (1, 2):
            name = "worker%d" % i
            self.procs[name] = Proc(name, [self.agentzd, "--roles", "worker", "--listen",
                                           "127.0.0.1:%d" % free_port()],
                                    self.env({"AGENTZ_WORKER_ID": "chaos-" + name}), L(name), READY_RE)
            self.procs[name].start()
        gw_port = free_port()
        self.procs["gateway"] = Proc("gateway", [self.gateway, "--listen", "127.0.0.1:%d" % gw_port,
                                                 "--upstream", self.procs["api"].address, "--web-dir", ""],
                                     self.env(), L("gateway"), GW_READY_RE)
        self.procs["gateway"].start()
        r = subprocess.run([self.agentzd, "admin", "create-key", "--role", "owner", "--name", "chaos",
                            "--database-url", self.pg.url], env=self.env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise RuntimeError("create-key failed: " + r.stderr)
        self.key = r.stdout.strip().split()[-1]
        self.api = Api(self.procs["api"].address, self.key)
        self.api.call("agentz.v1.SystemService", "CreateSecret",
                      {"name": "chaos-provider-key", "value": self.provider_secret})
        policy = {"initialBackoff": "0.2s", "maximumBackoff": "1s", "backoffCoefficient": 2,
                  "maxAttempts": 10}
        self.policy = policy
        agent = self.api.call("agentz.v1.AgentService", "CreateAgent", {"agent": {
            "role": "Chaos Agent", "goal": "Survive", "backstory": "Broken on purpose.",
            "llm": {"provider": "openai", "model": "chaos", "baseUrl": self.fake.base_url,
                    "apiKeySecret": "chaos-provider-key", "timeout": "2s"}}})
        self.agent_id = agent.id
        self.fake.httpd.tokens["chaos-tokens"] = self.args.stall_tokens
        tagent = self.api.call("agentz.v1.AgentService", "CreateAgent", {"agent": {
            "role": "Chaos Talker", "goal": "Talk a lot", "backstory": "Verbose.",
            "llm": {"provider": "openai", "model": "chaos-tokens", "baseUrl": self.fake.base_url,
                    "apiKeySecret": "chaos-provider-key"}}})
        self.token_agent_id = tagent.id
        wf = self.api.call("agentz.v1.WorkflowService", "CreateWorkflow", {"workflow": {
            "name": "chaos-" + uuid.uuid4().hex[:8], "process": "PROCESS_SEQUENTIAL",
            "steps": [{"id": "s%d" % i, "agentId": self.agent_id, "description": "chaos step %d" % i,
                       "expectedOutput": "text", "retryPolicy": policy} for i in (1, 2)]}})
        self.workflow_id = wf.id
        twf = self.api.call("agentz.v1.WorkflowService", "CreateWorkflow", {"workflow": {
            "name": "chaos-tokens-" + uuid.uuid4().hex[:8], "process": "PROCESS_SEQUENTIAL",
            "steps": [{"id": "talk", "agentId": self.token_agent_id, "description": "talk",
                       "expectedOutput": "text"}]}})
        self.token_workflow_id = twf.id
        log("topology up in %.1f s: api %s, workers %s, gateway %s, postgresql :%d, redis :%d" % (
            time.monotonic() - t0, self.procs["api"].address,
            ",".join(self.procs[w].address for w in ("worker1", "worker2")),
            self.procs["gateway"].address, self.pg.port, self.redis.port))

    def teardown(self):
        self.stop.set()
        self.active.clear()
        rcs = {}
        for name in ("gateway", "worker1", "worker2", "api"):
            p = self.procs.get(name)
            if p:
                rcs[name] = p.term()
        self.redis.stop()
        self.pg.stop()
        self.fake.stop()
        return rcs

    def all_healthy(self):
        for name in ("api", "worker1", "worker2"):
            p = self.procs[name]
            if not p.alive() or not health_serving(p.address):
                return False
        return http_status(self.procs["gateway"].address, "/readyz") == 200

    def wait_healthy(self, t0, bound=RECOVERY_BOUND_S * 3):
        while not self.all_healthy():
            if time.monotonic() - t0 > bound:
                return None
            time.sleep(0.1)
        return time.monotonic() - t0

    # ---- load

    def loader(self, idx):
        rnd = random.Random(idx)
        while not self.stop.is_set():
            if not self.active.wait(0.2):
                continue
            ph = self.phase
            rid = str(uuid.uuid4())
            try:
                if rnd.random() < 0.6:
                    t = self.api.call_retrying("agentz.v1.TaskService", "CreateTask", {"task": {
                        "description": "chaos task %s" % rid[:8], "expectedOutput": "text",
                        "agentId": self.agent_id, "retryPolicy": self.policy, "timeout": "30s"},
                        "requestId": rid})
                    with ph.lock:
                        ph.tasks.add(t.id)
                    with self.wq_lock:
                        if rnd.random() < 0.3:
                            self.watch_q.append(("task", t.id, ph))
                else:
                    r = self.api.call_retrying("agentz.v1.WorkflowService", "StartRun", {
                        "workflowId": self.workflow_id, "requestId": rid})
                    with ph.lock:
                        ph.runs.add(r.id)
                    with self.wq_lock:
                        if rnd.random() < 0.5:
                            self.watch_q.append(("run", r.id, ph))
                        if rnd.random() < 0.5:
                            self.sse_q.append(("sse", r.id, ph))
            except grpc.RpcError as e:
                with ph.lock:
                    ph.errors.append("create gave up: %s %s" % (e.code(), e.details()))
            time.sleep(rnd.uniform(0.5, 1.0) / self.args.load)

    def next_watch(self, q):
        with self.wq_lock:
            return q.pop() if q else None

    def watcher(self, idx):
        while not self.stop.is_set():
            item = self.next_watch(self.watch_q)
            if not item:
                time.sleep(0.1)
                continue
            kind, eid, ph = item
            seqs = []
            with ph.lock:
                ph.watched[(kind, eid)] = seqs
            service, method, field = (("agentz.v1.WorkflowService", "WatchRun", "runId") if kind == "run"
                                      else ("agentz.v1.TaskService", "WatchTask", "taskId"))
            end = time.monotonic() + 120
            while time.monotonic() < end and not self.stop.is_set():
                req = {field: eid}
                if seqs:
                    req["afterSequence"] = str(max(seqs))
                try:
                    call = self.api.stream(service, method, req, timeout=60)
                    for ev in call:
                        if ev.sequence > 0:
                            seqs.append(ev.sequence)
                    with ph.lock:
                        ph.watch_done.add((kind, eid))
                    break
                except grpc.RpcError as e:
                    if e.code() not in RETRY_CODES:
                        with ph.lock:
                            ph.errors.append("watch %s %s: %s %s" % (kind, eid, e.code(), e.details()))
                        break
                    time.sleep(0.2)

    def sse_watcher(self):
        while not self.stop.is_set():
            item = self.next_watch(self.sse_q)
            if not item:
                time.sleep(0.1)
                continue
            kind, eid, ph = item
            seqs = []
            with ph.lock:
                ph.watched[(kind, eid)] = seqs
            end = time.monotonic() + 120
            while time.monotonic() < end and not self.stop.is_set():
                host, port = self.procs["gateway"].address.rsplit(":", 1)
                headers = {"Authorization": "Bearer " + self.key, "Accept": "text/event-stream"}
                if seqs:
                    headers["Last-Event-ID"] = str(max(seqs))
                try:
                    c = http.client.HTTPConnection(host, int(port), timeout=30)
                    c.request("GET", "/v1/runs/%s:watch" % eid, headers=headers)
                    r = c.getresponse()
                    if r.status != 200:
                        r.read()
                        c.close()
                        time.sleep(0.2)
                        continue
                    event, ended, end_code = None, False, None
                    for raw in r:
                        line = raw.decode("utf-8", "replace").rstrip("\r\n")
                        if line.startswith("id: "):
                            seqs.append(int(line[4:]))
                        elif line.startswith("event: "):
                            event = line[7:]
                        elif line.startswith("data: ") and event == "end":
                            end_code = json.loads(line[6:]).get("code")
                            ended = True
                            break
                        elif line == "":
                            event = None
                    c.close()
                    if ended and end_code == 0:
                        with ph.lock:
                            ph.watch_done.add((kind, eid))
                        break
                except (OSError, http.client.HTTPException, ValueError):
                    pass
                time.sleep(0.2)

    # ---- checks

    def check_phase(self, ph):
        """Waits for the phase's work to end, then compares what was observed with PostgreSQL.
        The subqueries name workspace_id and task_seq IS NOT NULL so that they use the indexes
        (task_attempts_pkey, events_task): without, an hour's soak (40,000 tasks) scanned the
        events once per task and the check did not end."""
        problems = []
        t0 = time.monotonic()
        ids = sorted(ph.tasks)
        runs = sorted(ph.runs)
        run_list = ",".join("'%s'" % r for r in runs) or "NULL"
        task_list = ",".join("'%s'" % t for t in ids) or "NULL"
        while True:
            open_tasks = self.pg.q(
                "SELECT count(*) FROM tasks WHERE (id IN (%s) OR run_id IN (%s)) AND status NOT IN (5,6,7)"
                % (task_list, run_list))[0][0]
            open_runs = self.pg.q("SELECT count(*) FROM workflow_runs WHERE id IN (%s) AND status NOT IN (3,4,5)"
                                  % run_list)[0][0]
            if open_tasks == "0" and open_runs == "0":
                break
            if time.monotonic() - t0 > SETTLE_BOUND_S:
                problems.append("%s tasks and %s runs not terminal %d s after the load stopped" % (
                    open_tasks, open_runs, SETTLE_BOUND_S))
                break
            time.sleep(0.3)
        settle = time.monotonic() - t0
        # every task of the phase (standalone, and the runs' steps): ended exactly once
        rows = self.pg.q(
            "SELECT t.id, t.status, t.attempt, coalesce(t.error_type, ''),"
            " (SELECT count(*) FROM task_attempts a WHERE a.workspace_id = t.workspace_id AND a.task_id = t.id),"
            " (SELECT coalesce(max(a.attempt), 0) FROM task_attempts a WHERE a.workspace_id = t.workspace_id AND a.task_id = t.id),"
            " (SELECT count(*) FROM task_attempts a WHERE a.workspace_id = t.workspace_id AND a.task_id = t.id AND a.status = 5),"
            " (SELECT count(*) FROM task_attempts a WHERE a.workspace_id = t.workspace_id AND a.task_id = t.id AND a.status = 3),"
            " (SELECT coalesce((SELECT a.status FROM task_attempts a WHERE a.workspace_id = t.workspace_id AND a.task_id = t.id"
            "   ORDER BY a.attempt DESC LIMIT 1), 0)),"
            " (SELECT count(*) FROM events e WHERE e.workspace_id = t.workspace_id AND e.task_id = t.id AND e.task_seq IS NOT NULL AND e.terminal),"
            " (SELECT count(*) FROM events e WHERE e.workspace_id = t.workspace_id AND e.task_id = t.id AND e.task_seq IS NOT NULL),"
            " (SELECT coalesce(max(e.task_seq), 0) FROM events e WHERE e.workspace_id = t.workspace_id AND e.task_id = t.id AND e.task_seq IS NOT NULL)"
            " FROM tasks t WHERE t.id IN (%s) OR t.run_id IN (%s)" % (task_list, run_list))
        found = {r[0] for r in rows}
        # attempts that did not succeed, by reason: evidence that the fault hit running work
        retried = collections.Counter()
        for etype, n in self.pg.q(
                "SELECT coalesce(nullif(a.error_type, ''), 'status ' || a.status), count(*)"
                " FROM task_attempts a JOIN tasks t ON t.id = a.task_id"
                " WHERE (t.id IN (%s) OR t.run_id IN (%s)) AND a.status <> 5 GROUP BY 1" % (task_list, run_list)):
            retried[etype] = int(n)
        for t in ids:
            if t not in found:
                problems.append("task %s was acknowledged but is not stored" % t)
        lost = len(set(ids) - found)
        outcomes = collections.Counter()
        for (tid, st, att, etype, n_att, max_att, n_ok, n_running, last_st, n_term, n_ev, max_seq) in rows:
            st, att, n_att, max_att = int(st), int(att), int(n_att), int(max_att)
            outcomes[{5: "succeeded", 6: "failed", 7: "cancelled"}.get(st, "open")] += 1
            bad = []
            if st not in TERMINAL_TASK:
                bad.append("status %d is not terminal" % st)
                lost += 1
            if n_term != "1":
                bad.append("%s terminal events" % n_term)
            if att != n_att or att != max_att:
                bad.append("attempt %d but %d attempts recorded (max %d)" % (att, n_att, max_att))
            if n_running != "0":
                bad.append("%s attempts still running" % n_running)
            if st == 5 and (n_ok != "1" or last_st != "5"):
                bad.append("succeeded with %s successful attempts, last attempt status %s" % (n_ok, last_st))
            if st != 5 and n_ok != "0":
                bad.append("status %d with a successful attempt" % st)
            if st == 6 and not etype:
                bad.append("failed without a reason")
            if n_ev != max_seq:
                bad.append("task events numbered up to %s but %s stored" % (max_seq, n_ev))
            if bad:
                problems.append("task %s: %s" % (tid, "; ".join(bad)))
        # every watched stream: each stored event exactly once
        deadline = time.monotonic() + WATCH_BOUND_S
        while True:
            with ph.lock:
                pending = [k for k in ph.watched if k not in ph.watch_done]
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        missing = dup = events = 0
        with ph.lock:
            watched = dict(ph.watched)
            done = set(ph.watch_done)
        stored_of = {}  # one query per scope kind, not one per stream
        for kinds, col, key in ((("run", "sse"), "run_seq", "run_id"), (("task",), "task_seq", "task_id")):
            ids_of_kind = sorted({eid for (kind, eid) in watched if kind in kinds})
            if not ids_of_kind:
                continue
            for eid, seqs_text in self.pg.q(
                    "SELECT %s, string_agg(%s::text, ',' ORDER BY %s) FROM events WHERE %s IN (%s)"
                    " AND %s IS NOT NULL GROUP BY 1" % (key, col, col, key,
                                                        ",".join("'%s'" % i for i in ids_of_kind), col)):
                for kind in kinds:
                    stored_of[(kind, eid)] = [int(x) for x in seqs_text.split(",")]
        for (kind, eid), seqs in watched.items():
            if (kind, eid) not in done:
                problems.append("%s stream of %s did not end within %d s" % (kind, eid, WATCH_BOUND_S))
            stored = stored_of.get((kind, eid), [])
            if stored != list(range(1, len(stored) + 1)):
                problems.append("%s %s: stored sequences are not 1..N: %s" % (kind, eid, stored))
            got = list(seqs)
            counts = collections.Counter(got)
            d = sum(c - 1 for c in counts.values() if c > 1)
            m = len(set(stored) - set(got))
            extra = set(got) - set(stored)
            events += len(stored)
            dup += d
            missing += m
            if d or m or extra:
                problems.append("%s %s: %d missing, %d duplicated, %d not stored (got %s, stored 1..%d)" % (
                    kind, eid, m, d, len(extra), got, len(stored)))
        # the audit chain
        r = subprocess.run([self.agentzd, "admin", "verify-audit", "--database-url", self.pg.url],
                           env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        audit = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
        if r.returncode != 0:
            problems.append("audit chain: %s" % r.stdout.strip())
        problems += ph.errors
        if ph.recovery_s is None:
            problems.append("health did not answer SERVING again within %.0f s" % (RECOVERY_BOUND_S * 3))
        elif ph.recovery_s > RECOVERY_BOUND_S:
            problems.append("recovery took %.1f s, over the %.0f s bound" % (ph.recovery_s, RECOVERY_BOUND_S))
        if ph.e2e_s is None:
            problems.append("a probe task created after recovery did not succeed within %.0f s" % (E2E_BOUND_S * 2))
        elif ph.e2e_s > E2E_BOUND_S:
            problems.append("a probe task took %.1f s after the fault, over the %.0f s bound" % (ph.e2e_s, E2E_BOUND_S))
        problems += ph.extra.get("problems", [])
        row = {"fault": ph.name, "tasks": len(rows), "runs": len(runs), "outcomes": dict(outcomes),
               "unsuccessful_attempts": dict(retried), "extra": {k: v for k, v in ph.extra.items() if k != "problems"},
               "streams": len(watched), "events": events, "lost": lost + missing, "duplicated": dup,
               "recovery_s": ph.recovery_s, "e2e_s": ph.e2e_s, "settle_s": settle, "audit": audit, "problems": problems}
        self.rows.append(row)
        status = "ok" if not problems else "FAILED"
        log("%-22s %s: %d tasks (%s), %d streams, %d events, lost %d, dup %d, recovery %s s, probe done %s s,"
            " settle %.1f s" % (
                ph.name, status, len(rows), ", ".join("%s %d" % kv for kv in sorted(outcomes.items())),
                len(watched), events, lost + missing, dup,
                "-" if ph.recovery_s is None else "%.2f" % ph.recovery_s,
                "-" if ph.e2e_s is None else "%.2f" % ph.e2e_s, settle))
        if retried:
            log("    attempts that did not succeed: " + ", ".join("%s %d" % kv for kv in sorted(retried.items())))
        for p in problems[:20]:
            log("    " + p)

    # ---- faults

    def restart(self, name):
        self.procs[name].start()

    def relay_holder(self, timeout=10.0):
        """The agentzd process whose relay holds the outbox lock (an advisory transaction lock,
        held for one batch): a loop inside PostgreSQL polls pg_locks every half millisecond
        until a backend holds it, then its client port names the local socket's owner."""
        pids = {p.pid: n for n, p in self.procs.items() if n != "gateway" and p.alive()}
        loop = ("DO $$ DECLARE p int; BEGIN FOR i IN 1..%d LOOP"
                " SELECT l.pid INTO p FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted"
                " AND l.objid = 1635148150 AND l.classid = 0 LIMIT 1;"
                " IF p IS NOT NULL THEN RAISE NOTICE 'holder %%', p; RETURN; END IF;"
                " PERFORM pg_sleep(0.0005); END LOOP; END $$" % int(timeout * 1500))
        r = subprocess.run(["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(self.pg.port), "-U", "agentz",
                            "-d", "agentz", "-c", loop], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
        m = re.search(r"holder (\d+)", r.stderr)
        if not m:
            return None
        port = self.pg.q("SELECT client_port FROM pg_stat_activity WHERE pid = %s" % m.group(1))
        if not port or not port[0][0]:
            return None
        out = subprocess.run(["ss", "-tnpH", "sport = :%s" % port[0][0]], stdout=subprocess.PIPE,
                             text=True).stdout
        for m in re.finditer(r"pid=(\d+)", out):
            if int(m.group(1)) in pids:
                return pids[int(m.group(1))]
        return None

    def fault(self, name):
        """Injects one fault; returns after the driver (as supervisor) restarted what it killed,
        with the time recovery counts from when that is not the call's start (else None)."""
        ph = self.phase
        if name == "kill -9 worker":
            # while it runs tasks, so that their leases have to expire and be reaped
            end = time.monotonic() + 5
            while time.monotonic() < end and self.pg.q(
                    "SELECT count(*) FROM tasks WHERE status = 3 AND lease_owner = 'chaos-worker1'")[0][0] == "0":
                time.sleep(0.05)
            t_kill = time.monotonic()
            self.procs["worker1"].kill9()
            self.restart("worker1")
            return t_kill
        if name == "kill -9 api":
            self.procs["api"].kill9()
            self.restart("api")
        elif name == "kill -9 relay holder":
            holder = self.relay_holder()
            ph.extra["holder"] = holder
            if holder is None:
                ph.extra.setdefault("problems", []).append("no relay seen holding the outbox lock")
                return
            ph.name = "kill -9 relay (%s)" % holder
            t_kill = time.monotonic()
            self.procs[holder].kill9()
            self.restart(holder)
            return t_kill
        elif name == "kill -9 gateway":
            self.procs["gateway"].kill9()
            self.restart("gateway")
        elif name == "restart redis":
            self.redis.kill9()
            self.redis.start()
        elif name == "redis down 2 s":
            # longer than the first reconnect backoff: reconnects are refused before one works
            self.redis.kill9()
            time.sleep(2.0)
            self.redis.start()
        elif name == "redis FLUSHALL":
            if self.redis.cli("FLUSHALL") != "OK":
                ph.extra.setdefault("problems", []).append("FLUSHALL failed")
        elif name == "restart pg (fast)":
            self.pg.restart("fast")
        elif name == "restart pg (immediate)":
            self.pg.restart("immediate")
        elif name == "stalled consumer":
            self.stalled_consumer(ph)
        elif name.startswith("llm "):
            mode = name.split()[1]
            self.fake.set_mode({"timeouts": "hang"}.get(mode, mode))
            time.sleep(self.args.llm_fault_s)
            self.fake.set_mode("ok")
            return time.monotonic()  # recovery counts from the end of the outage
        else:
            raise ValueError(name)

    def stalled_consumer(self, ph):
        """A WatchRun with tokens whose client reads nothing while a run streams thousands of
        token deltas: the server must cut it (RESOURCE_EXHAUSTED) at its queue bound, not buffer;
        a resume from the sequence it names then loses nothing."""
        api_pid = self.procs["api"].pid
        before = rss_kb(api_pid)
        run = self.api.call_retrying("agentz.v1.WorkflowService", "StartRun", {
            "workflowId": self.token_workflow_id, "requestId": str(uuid.uuid4())})
        with ph.lock:
            ph.runs.add(run.id)
        # a channel of its own with a small window, so the stall reaches the server quickly
        ch = grpc.insecure_channel(self.procs["api"].address, options=CHANNEL_OPTS + [
            ("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 0)])
        call = self.api.stream("agentz.v1.WorkflowService", "WatchRun",
                               {"runId": run.id, "includeTokens": True}, timeout=90, channel=ch)
        first = next(call)  # the stream is open; now stall
        peak = before
        end = time.monotonic() + 40
        while time.monotonic() < end:
            peak = max(peak, rss_kb(api_pid))
            st = self.pg.q("SELECT status FROM workflow_runs WHERE id = '%s'" % run.id)[0][0]
            if int(st) in TERMINAL_RUN:
                break
            time.sleep(0.2)
        time.sleep(1.0)
        peak = max(peak, rss_kb(api_pid))
        seqs = [first.sequence] if first.sequence > 0 else []
        tokens, code, details = 0, None, ""
        try:
            for ev in call:
                if ev.sequence > 0:
                    seqs.append(ev.sequence)
                elif ev.WhichOneof("payload") == "token":
                    tokens += 1
            code = grpc.StatusCode.OK
        except grpc.RpcError as e:
            code, details = e.code(), e.details() or ""
        ch.close()
        problems = ph.extra.setdefault("problems", [])
        if code != grpc.StatusCode.RESOURCE_EXHAUSTED:
            problems.append("the stalled stream ended %s (%s) after %d token events, not RESOURCE_EXHAUSTED"
                            % (code, details, tokens))
        m = re.search(r"after_sequence = (\d+)", details)
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and (not m or int(m.group(1)) != (max(seqs) if seqs else 0)):
            problems.append("cut stream names %r but the last sequence received is %s" % (details, seqs[-1:]))
        growth = peak - before
        ph.extra["stall"] = "cut after %d tokens (%s), api RSS +%d KiB" % (tokens, code.name if code else "?", growth)
        log("stalled consumer: " + ph.extra["stall"])
        if growth > STALL_RSS_BOUND_KB:
            problems.append("api RSS grew %d KiB while one consumer stalled (bound %d)" % (growth, STALL_RSS_BOUND_KB))
        # the resume is what a client does next: it is checked like any watched stream
        with ph.lock:
            ph.watched[("run", run.id)] = seqs
        after = max(seqs) if seqs else 0
        try:
            for ev in self.api.stream("agentz.v1.WorkflowService", "WatchRun",
                                      {"runId": run.id, "afterSequence": str(after)}, timeout=30):
                if ev.sequence > 0:
                    seqs.append(ev.sequence)
            with ph.lock:
                ph.watch_done.add(("run", run.id))
        except grpc.RpcError as e:
            problems.append("resume of the stalled stream failed: %s %s" % (e.code(), e.details()))

    def probe(self, ph, t0):
        """A task created once health is back must succeed: seconds from the fault to its end,
        or None. Health alone can say SERVING while work is stuck (a worker without Redis)."""
        try:
            t = self.api.call_retrying("agentz.v1.TaskService", "CreateTask", {"task": {
                "description": "chaos probe", "expectedOutput": "text", "agentId": self.agent_id,
                "retryPolicy": self.policy}, "requestId": str(uuid.uuid4())})
        except grpc.RpcError:
            return None
        with ph.lock:
            ph.tasks.add(t.id)
        end = time.monotonic() + E2E_BOUND_S * 2
        while time.monotonic() < end:
            st = self.pg.q("SELECT status FROM tasks WHERE id = '%s'" % t.id)[0][0]
            if st == "5":
                return time.monotonic() - t0
            if st in ("6", "7"):
                return None
            time.sleep(0.1)
        return None

    def run_fault(self, name):
        ph = Phase(name)
        self.phase = ph
        self.active.set()
        time.sleep(self.args.pre_s)
        t0 = time.monotonic()
        try:
            t0 = self.fault(name) or t0
        except Exception as e:  # the fault itself failed: that is a finding, not a crash
            ph.extra.setdefault("problems", []).append("injecting the fault failed: %s" % e)
        ph.recovery_s = self.wait_healthy(t0)
        ph.e2e_s = self.probe(ph, t0)
        time.sleep(self.args.post_s)
        self.active.clear()
        time.sleep(0.3)  # creates in flight land in this phase
        self.check_phase(ph)

    # ---- soak sampling

    def sample(self):
        row = {"t": time.monotonic()}
        for n, p in self.procs.items():
            row[n] = (rss_kb(p.pid), fd_count(p.pid))
        self.samples.append(row)
        return row

    def soak(self, minutes):
        """Mixed load for minutes, sampling RSS and fds of every process every 10 s; after a
        warm-up of a fifth of the run, a least-squares slope over the rest must stay under the
        bounds (KiB/min, fds/min)."""
        ph = Phase("soak %d min" % minutes)
        self.phase = ph
        self.active.set()
        end = time.monotonic() + minutes * 60
        while time.monotonic() < end:
            r = self.sample()
            log("soak: " + ", ".join("%s rss %d KiB fds %d" % (n, v[0], v[1])
                                     for n, v in sorted(r.items()) if n != "t"))
            time.sleep(10)
        self.active.clear()
        time.sleep(0.3)
        ph.recovery_s = 0.0
        self.check_phase(ph)
        warm = self.samples[len(self.samples) // 5:]
        problems = self.rows[-1]["problems"]
        if len(warm) >= 6:
            t = [(s["t"] - warm[0]["t"]) / 60.0 for s in warm]
            for n in self.procs:
                for k, (what, bound) in enumerate((("rss KiB", self.args.rss_slope), ("fds", self.args.fd_slope))):
                    y = [s[n][k] for s in warm]
                    mt, my = sum(t) / len(t), sum(y) / len(y)
                    den = sum((a - mt) ** 2 for a in t) or 1.0
                    slope = sum((a - mt) * (b - my) for a, b in zip(t, y)) / den
                    log("soak slope %s %s: %.1f/min (bound %.1f)" % (n, what, slope, bound))
                    if slope > bound:
                        problems.append("%s %s grows %.1f/min after warm-up (bound %.1f)" % (n, what, slope, bound))
        else:
            problems.append("too few samples for a slope")

    # ---- end of the run

    def secrets_check(self):
        """No secret in any process's log or in any stored event."""
        problems = []
        secrets = {"the API key": self.key, "the provider key secret": self.provider_secret,
                   "the master key": self.master_key}
        for name in os.listdir(os.path.join(self.root, "log")):
            path = os.path.join(self.root, "log", name)
            with open(path, "rb") as f:
                data = f.read()
            for what, s in secrets.items():
                if s.encode() in data:
                    problems.append("%s appears in %s" % (what, path))
        for what, s in secrets.items():
            n = self.pg.q("SELECT count(*) FROM events WHERE position(convert_to('%s', 'UTF8') IN payload) > 0" % s)[0][0]
            if n != "0":
                problems.append("%s appears in %s stored events" % (what, n))
        if ("Bearer " + self.provider_secret) not in self.fake.httpd.auth:
            problems.append("the provider never received the key stored as a secret (got %s)"
                            % sorted(self.fake.httpd.auth)[:3])
        return problems

    def table(self):
        hdr = "%-26s %6s %5s %8s %7s %7s %5s %5s %9s %7s" % ("fault", "tasks", "runs", "retried", "streams",
                                                              "events", "lost", "dup", "recovery", "probe")
        lines = [hdr, "-" * len(hdr)]
        for r in self.rows:
            lines.append("%-26s %6d %5d %8d %7d %7d %5d %5d %8s %7s%s" % (
                r["fault"][:26], r["tasks"], r["runs"], sum(r["unsuccessful_attempts"].values()),
                r["streams"], r["events"], r["lost"],
                r["duplicated"], "-" if r["recovery_s"] is None else "%.2fs" % r["recovery_s"],
                "-" if r["e2e_s"] is None else "%.1fs" % r["e2e_s"],
                "" if not r["problems"] else "  FAILED"))
        tot = lambda k: sum(r[k] for r in self.rows)
        lines.append("-" * len(hdr))
        lines.append("%-26s %6d %5d %8d %7d %7d %5d %5d" % (
            "total", tot("tasks"), tot("runs"), sum(sum(r["unsuccessful_attempts"].values()) for r in self.rows),
            tot("streams"), tot("events"), tot("lost"), tot("duplicated")))
        return "\n".join(lines)


SHORT = ["kill -9 worker", "kill -9 api", "kill -9 relay holder", "kill -9 gateway", "restart redis",
         "redis down 2 s", "redis FLUSHALL", "restart pg (immediate)", "stalled consumer", "llm 429", "llm 500",
         "llm timeouts", "llm garbage"]
LONG = SHORT[:7] + ["restart pg (fast)"] + SHORT[7:]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--short", action="store_true", help="every fault once, light load (default)")
    g.add_argument("--long", action="store_true", help="more load, every fault --repeat times")
    g.add_argument("--soak", action="store_true", help="mixed load for --minutes, RSS and fds sampled")
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", action="append", help="run only this fault (repeatable)")
    ap.add_argument("--json", help="write the rows as JSON here")
    ap.add_argument("--rss-slope", type=float, default=1024.0, help="KiB/min allowed in the soak")
    ap.add_argument("--fd-slope", type=float, default=1.0, help="fds/min allowed in the soak")
    args = ap.parse_args()
    if args.long:
        args.load, args.loaders, args.watchers, faults = 2.0, 6, 4, LONG * args.repeat
        args.pre_s, args.post_s, args.llm_fault_s = 4.0, 4.0, 4.0
    else:
        args.load, args.loaders, args.watchers, faults = 1.0, 3, 2, list(SHORT)
        args.pre_s, args.post_s, args.llm_fault_s = 2.0, 2.0, 3.0
    if args.soak:
        args.load, args.loaders, args.watchers = 1.5, 4, 3
    args.token_delay = 0.08
    args.stall_tokens = 4000
    if args.only:
        faults = [f for f in faults if f in args.only] or args.only
    for p in (AGENTZD, GATEWAY):
        if not os.access(p, os.X_OK):
            log("%s not found (build first, or set AGENTZD)" % p)
            return 2
    # SIGTERM (a CI timeout) unwinds like Ctrl-C, so the topology is stopped in teardown
    def on_term(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, on_term)
    c = Chaos(args)
    t_start = time.monotonic()
    rc = 1
    try:
        c.setup()
        threads = [threading.Thread(target=c.loader, args=(i,), daemon=True) for i in range(args.loaders)]
        threads += [threading.Thread(target=c.watcher, args=(i,), daemon=True) for i in range(args.watchers)]
        threads.append(threading.Thread(target=c.sse_watcher, daemon=True))
        for t in threads:
            t.start()
        if args.soak:
            c.soak(args.minutes)
        else:
            for f in faults:
                log("fault: " + f)
                c.run_fault(f)
        secret_problems = c.secrets_check()
        print(c.table())
        failed = [r for r in c.rows if r["problems"]]
        for r in failed:
            print("FAILED %s:" % r["fault"])
            for p in r["problems"]:
                print("  " + p)
        if secret_problems:
            print("FAILED secrets:")
            for p in secret_problems:
                print("  " + p)
        rc = 1 if failed or secret_problems else 0
    finally:
        rcs = c.teardown()
        bad_exit = {n: v for n, v in rcs.items() if v != 0}
        if bad_exit:
            print("processes that did not stop cleanly on SIGTERM: %s" % bad_exit)
            rc = 1
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"rows": c.rows, "samples": c.samples}, f, indent=1, default=str)
    ok = sum(1 for r in c.rows if not r["problems"])
    print("chaos run took %.0f s" % (time.monotonic() - t_start))
    print("chaos: %d passed, %d failed" % (ok, len(c.rows) - ok))
    return rc


if __name__ == "__main__":
    sys.exit(main())
