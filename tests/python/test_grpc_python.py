"""AGENTZ API tested through a client we did not write: Debian's python3-grpcio + python3-protobuf.

Run with the system interpreter (the one that has grpc):

    AGENTZD=build/bin/agentzd AGENTZ_TEST_DIR=/tmp/agentz-test \
        /usr/bin/python3 -m unittest discover -s tests/python -v

setUpModule starts ONE agentzd with an embedded PostgreSQL/Redis under
$AGENTZ_TEST_DIR/python-embedded (the directory and its parents must be reachable by the
`postgres` user).  No generated code is used or committed: the reflection and health protos are
compiled with protoc into a temporary directory at test time, and every agentz.v1 message class is
built from the descriptors the server itself returns over gRPC reflection.

Authentication: when the server wrote a local admin key to <data dir>/admin.key, every call except
health and reflection carries "authorization: Bearer <key>" (added by an interceptor on CHANNEL;
RAW_CHANNEL sends no credentials).  Without the file (a server that does not enforce
authentication yet) calls go out without credentials and the auth tests are skipped.
"""

import collections
import importlib.util
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENTZD = os.environ.get("AGENTZD") or os.path.join(REPO, "build", "bin", "agentzd")
TEST_DIR = os.environ.get("AGENTZ_TEST_DIR") or os.path.join(REPO, "build")
GRPC_PROTO_DIR = "/usr/share/grpc-proto"
READY_RE = re.compile(r"AGENTZ is running: gRPC at (\S+)")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TIMEOUT = 10.0  # default deadline of every call, in seconds

# Filled by setUpModule.
SERVER = None          # subprocess.Popen
LOG_PATH = None        # agentzd's stderr
ADDRESS = None         # "127.0.0.1:PORT"
CHANNEL = None         # grpc.Channel that adds the admin key to every non-public call
RAW_CHANNEL = None     # grpc.Channel without credentials
ADMIN_KEY = None       # contents of <data dir>/admin.key without the newline, or None
DATA_DIR = None
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
CREDENTIAL_KEYS = ("authorization", "x-api-key")
GEN_DIR = None         # temporary protoc output
REFL = {}              # "v1" / "v1alpha" -> generated reflection_pb2 module
HEALTH_PB2 = None      # generated health_pb2 module
_STDOUT_LINES = queue.Queue()
_PUMP = None           # thread draining agentzd's stdout


def log_tail(n=60):
    try:
        with open(LOG_PATH, "r", errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except (OSError, TypeError):
        return "(no log)"


# --------------------------------------------------------------------------------------------
# protoc-compiled helper protos (reflection v1, v1alpha, health), loaded under private names so
# they do not shadow the `grpc` package.

def _load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _compile_helper_protos():
    global GEN_DIR, HEALTH_PB2
    GEN_DIR = tempfile.mkdtemp(prefix="agentz-pygen-")
    rels = ["grpc/reflection/v1/reflection.proto", "grpc/reflection/v1alpha/reflection.proto",
            "grpc/health/v1/health.proto"]
    subprocess.run(["protoc", "-I", GRPC_PROTO_DIR, "--python_out=" + GEN_DIR] + rels, check=True)
    REFL["v1"] = _load_module("_az_reflection_v1_pb2",
                              os.path.join(GEN_DIR, "grpc/reflection/v1/reflection_pb2.py"))
    REFL["v1alpha"] = _load_module("_az_reflection_v1alpha_pb2",
                                   os.path.join(GEN_DIR, "grpc/reflection/v1alpha/reflection_pb2.py"))
    HEALTH_PB2 = _load_module("_az_health_v1_pb2", os.path.join(GEN_DIR, "grpc/health/v1/health_pb2.py"))


# --------------------------------------------------------------------------------------------
# credentials

class _CallDetails(collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready",
                         "compression")), grpc.ClientCallDetails):
    pass


class _AuthInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                       grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds "authorization: Bearer <key>" to every call but health and reflection, unless the
    call brings its own credentials (so tests can send a wrong key)."""

    def __init__(self, key):
        self.key = key

    def _details(self, d):
        if d.method.startswith(PUBLIC_PREFIXES):
            return d
        md = list(d.metadata or ())
        if any(k.lower() in CREDENTIAL_KEYS for k, _ in md):
            return d
        md.append(("authorization", "Bearer " + self.key))
        return _CallDetails(d.method, d.timeout, md, d.credentials, d.wait_for_ready,
                            getattr(d, "compression", None))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


def _read_admin_key():
    try:
        with open(os.path.join(DATA_DIR, "admin.key"), "r") as f:
            key = f.read().strip()
    except OSError:
        return None
    return key or None


def _load_admin_key():
    """The key is written before the ready line; should it come later, wait for it (up to 5 s)
    only when the server refuses an unauthenticated call, so a server without authentication
    costs nothing."""
    key = _read_admin_key()
    if key is not None:
        return key
    probe = RAW_CHANNEL.unary_unary("/agentz.v1.AgentService/ListAgents")
    try:
        probe(b"", timeout=TIMEOUT)
        return None
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.UNAUTHENTICATED:
            return None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.05)
        key = _read_admin_key()
        if key is not None:
            return key
    raise RuntimeError("agentzd enforces authentication but wrote no %s/admin.key" % DATA_DIR)


# --------------------------------------------------------------------------------------------
# server lifecycle

def _pump_stdout(stream):
    for line in iter(stream.readline, ""):
        _STDOUT_LINES.put(line)
    _STDOUT_LINES.put(None)


def setUpModule():
    global SERVER, LOG_PATH, ADDRESS, CHANNEL, RAW_CHANNEL, ADMIN_KEY, DATA_DIR
    if not os.access(AGENTZD, os.X_OK):
        raise RuntimeError("agentzd not found at %s (set AGENTZD)" % AGENTZD)
    _compile_helper_protos()
    data_dir = DATA_DIR = os.path.join(TEST_DIR, "python-embedded")
    os.makedirs(data_dir, exist_ok=True)
    LOG_PATH = os.path.join(TEST_DIR, "python-agentzd.log")
    env = {k: v for k, v in os.environ.items()
           if k not in ("AGENTZ_DATABASE_URL", "AGENTZ_REDIS_URL")}
    # Bursts of test calls would trip the default rate limits.
    for k in ("AGENTZ_RATE_LIMIT", "AGENTZ_RATE_LIMIT_WORKSPACE", "AGENTZ_RATE_LIMIT_EXPENSIVE"):
        env.setdefault(k, "0")
    log = open(LOG_PATH, "w")
    SERVER = subprocess.Popen([AGENTZD, "--data-dir", data_dir, "--listen", "127.0.0.1:0"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                              env=env, text=True)
    log.close()
    global _PUMP
    _PUMP = threading.Thread(target=_pump_stdout, args=(SERVER.stdout,), daemon=True)
    _PUMP.start()
    deadline = time.monotonic() + 90
    while ADDRESS is None:
        left = deadline - time.monotonic()
        try:
            line = _STDOUT_LINES.get(timeout=max(left, 0.01)) if left > 0 else None
        except queue.Empty:
            line = None
        if line is None:
            rc = SERVER.poll()
            if rc is None:
                SERVER.kill()
                SERVER.wait()
            why = "exited with %s" % rc if rc is not None else "not ready within 90 s"
            SERVER = None
            raise RuntimeError("agentzd %s; log tail:\n%s" % (why, log_tail()))
        m = READY_RE.search(line)
        if m:
            ADDRESS = m.group(1)
    RAW_CHANNEL = grpc.insecure_channel(ADDRESS)
    try:
        grpc.channel_ready_future(RAW_CHANNEL).result(timeout=10)
    except grpc.FutureTimeoutError:
        raise RuntimeError("cannot connect to %s; log tail:\n%s" % (ADDRESS, log_tail()))
    ADMIN_KEY = _load_admin_key()
    CHANNEL = (grpc.intercept_channel(RAW_CHANNEL, _AuthInterceptor(ADMIN_KEY))
               if ADMIN_KEY else RAW_CHANNEL)


def tearDownModule():
    global SERVER
    if RAW_CHANNEL is not None:
        RAW_CHANNEL.close()
    if GEN_DIR:
        shutil.rmtree(GEN_DIR, ignore_errors=True)
    if SERVER is None:
        return
    proc, SERVER = SERVER, None
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("agentzd did not stop within 30 s of SIGTERM; log tail:\n" + log_tail())
    _PUMP.join(timeout=5)
    proc.stdout.close()
    if rc != 0:
        raise AssertionError("agentzd exited with %d after SIGTERM; log tail:\n%s" % (rc, log_tail()))


# --------------------------------------------------------------------------------------------
# reflection client

def reflection_stream(version, requests, timeout=TIMEOUT):
    """Opens a ServerReflectionInfo stream; returns an iterator of responses."""
    pb = REFL[version]
    call = CHANNEL.stream_stream(
        "/grpc.reflection.%s.ServerReflection/ServerReflectionInfo" % version,
        request_serializer=pb.ServerReflectionRequest.SerializeToString,
        response_deserializer=pb.ServerReflectionResponse.FromString)
    return call(iter(requests), timeout=timeout)


class ReflectionSession:
    """One bidi stream on which requests are sent one at a time and answered in turn."""

    def __init__(self, version="v1"):
        self.pb = REFL[version]
        self._q = queue.Queue()
        self._responses = reflection_stream(version, iter(self._q.get, None), timeout=30)

    def ask(self, **kw):
        self._q.put(self.pb.ServerReflectionRequest(**kw))
        return next(self._responses)

    def close(self):
        self._q.put(None)
        rest = list(self._responses)  # the server ends the stream once we half-close
        return rest


def reflect_once(version="v1", **kw):
    pb = REFL[version]
    out = list(reflection_stream(version, [pb.ServerReflectionRequest(**kw)]))
    if len(out) != 1:
        raise AssertionError("expected one reflection response, got %d" % len(out))
    return out[0]


def file_protos(resp):
    """FileDescriptorProtos of a file_descriptor_response, in the order sent."""
    out = []
    for raw in resp.file_descriptor_response.file_descriptor_proto:
        fd = descriptor_pb2.FileDescriptorProto()
        fd.ParseFromString(raw)
        out.append(fd)
    return out


def add_in_dependency_order(pool, fds):
    by_name = collections.OrderedDict((fd.name, fd) for fd in fds)
    added = set()

    def add(name, path=()):
        if name in added:
            return
        if name in path:
            raise AssertionError("import cycle: %s" % " -> ".join(path + (name,)))
        fd = by_name.get(name)
        if fd is None:
            raise AssertionError("reflection did not send dependency %s" % name)
        for dep in fd.dependency:
            add(dep, path + (name,))
        pool.Add(fd)
        added.add(name)

    for name in by_name:
        add(name)
    return added


class Reflected:
    """Message classes and method paths built only from descriptors served by reflection."""

    def __init__(self, symbols):
        self.pool = descriptor_pool.DescriptorPool()
        self.factory = message_factory.MessageFactory(self.pool)
        self.files = {}
        for sym in symbols:
            resp = reflect_once(file_containing_symbol=sym)
            if resp.WhichOneof("message_response") != "file_descriptor_response":
                raise AssertionError("file_containing_symbol(%s): %s" % (sym, resp))
            for fd in file_protos(resp):
                self.files.setdefault(fd.name, fd)
        add_in_dependency_order(self.pool, list(self.files.values()))

    def msg(self, full_name):
        return self.factory.GetPrototype(self.pool.FindMessageTypeByName(full_name))

    def enum_value(self, enum_full_name, value_name):
        return self.pool.FindEnumTypeByName(enum_full_name).values_by_name[value_name].number

    def method(self, service, name):
        """(path, request class, response class) of a unary method, from the service descriptor."""
        sd = self.pool.FindServiceByName(service)
        md = sd.methods_by_name[name]
        return ("/%s/%s" % (sd.full_name, md.name), self.factory.GetPrototype(md.input_type),
                self.factory.GetPrototype(md.output_type))


_REFLECTED = None


def reflected():
    global _REFLECTED
    if _REFLECTED is None:
        _REFLECTED = Reflected(["agentz.v1.AgentService"])
    return _REFLECTED


# --------------------------------------------------------------------------------------------

class T01ReflectionV1(unittest.TestCase):
    def test_list_services(self):
        resp = reflect_once(list_services="*")
        self.assertEqual(resp.WhichOneof("message_response"), "list_services_response", resp)
        names = {s.name for s in resp.list_services_response.service}
        for want in ("agentz.v1.AgentService", "agentz.v1.TaskService", "agentz.v1.WorkflowService",
                     "agentz.v1.SystemService", "grpc.health.v1.Health",
                     "grpc.reflection.v1.ServerReflection"):
            self.assertIn(want, names)
        self.assertEqual(resp.original_request.list_services, "*")

    def test_file_containing_service_with_dependencies(self):
        resp = reflect_once(file_containing_symbol="agentz.v1.AgentService")
        fds = file_protos(resp)
        names = [fd.name for fd in fds]
        self.assertEqual(names[0], "agentz/v1/agent.proto", names)
        for dep in ("google/protobuf/timestamp.proto", "google/protobuf/duration.proto",
                    "google/protobuf/field_mask.proto", "google/protobuf/wrappers.proto",
                    "google/protobuf/empty.proto", "agentz/v1/common.proto", "agentz/v1/event.proto"):
            self.assertIn(dep, names)
        self.assertEqual(len(names), len(set(names)), "a file was sent twice: %s" % names)
        # every transitive import is present, so a fresh pool accepts them all
        pool = descriptor_pool.DescriptorPool()
        add_in_dependency_order(pool, fds)
        sd = pool.FindServiceByName("agentz.v1.AgentService")
        self.assertIn("CreateAgent", sd.methods_by_name)
        self.assertEqual(sd.methods_by_name["CreateAgent"].output_type.full_name, "agentz.v1.Agent")
        agent = pool.FindMessageTypeByName("agentz.v1.Agent")
        self.assertEqual(agent.fields_by_name["llm"].message_type.full_name, "agentz.v1.LlmConfig")
        self.assertEqual(agent.fields_by_name["max_execution_time"].message_type.full_name,
                         "google.protobuf.Duration")

    def test_method_and_nested_symbols(self):
        for sym, want in (("agentz.v1.AgentService.CreateAgent", "agentz/v1/agent.proto"),
                          ("agentz.v1.LlmConfig", "agentz/v1/agent.proto"),
                          ("agentz.v1.Agent.LabelsEntry", "agentz/v1/agent.proto"),
                          ("agentz.v1.AgentStatus", "agentz/v1/common.proto"),
                          ("google.protobuf.Timestamp", "google/protobuf/timestamp.proto")):
            with self.subTest(symbol=sym):
                resp = reflect_once(file_containing_symbol=sym)
                self.assertEqual(resp.WhichOneof("message_response"), "file_descriptor_response", resp)
                self.assertEqual(file_protos(resp)[0].name, want)

    def test_file_by_filename(self):
        resp = reflect_once(file_by_filename="agentz/v1/common.proto")
        self.assertEqual(resp.WhichOneof("message_response"), "file_descriptor_response", resp)
        self.assertEqual(file_protos(resp)[0].name, "agentz/v1/common.proto")

    def test_unknown_symbol_then_stream_still_usable(self):
        s = ReflectionSession()
        try:
            bad = s.ask(file_containing_symbol="agentz.v1.DoesNotExist")
            self.assertEqual(bad.WhichOneof("message_response"), "error_response", bad)
            self.assertEqual(bad.error_response.error_code, grpc.StatusCode.NOT_FOUND.value[0])
            self.assertEqual(bad.original_request.file_containing_symbol, "agentz.v1.DoesNotExist")
            good = s.ask(list_services="")
            self.assertEqual(good.WhichOneof("message_response"), "list_services_response", good)
            self.assertIn("agentz.v1.AgentService",
                          {x.name for x in good.list_services_response.service})
        finally:
            self.assertEqual(s.close(), [])

    def test_several_requests_answered_in_order(self):
        pb = REFL["v1"]
        reqs = [pb.ServerReflectionRequest(list_services="*"),
                pb.ServerReflectionRequest(file_containing_symbol="agentz.v1.TaskService"),
                pb.ServerReflectionRequest(file_containing_symbol="nope.Nope"),
                pb.ServerReflectionRequest(file_by_filename="agentz/v1/workflow.proto"),
                pb.ServerReflectionRequest(file_containing_symbol="agentz.v1.SystemService")]
        out = list(reflection_stream("v1", reqs))
        self.assertEqual(len(out), len(reqs))
        for req, resp in zip(reqs, out):
            self.assertEqual(resp.original_request, req)
        self.assertEqual([r.WhichOneof("message_response") for r in out],
                         ["list_services_response", "file_descriptor_response", "error_response",
                          "file_descriptor_response", "file_descriptor_response"])
        self.assertEqual(file_protos(out[1])[0].name, "agentz/v1/task.proto")
        self.assertEqual(file_protos(out[3])[0].name, "agentz/v1/workflow.proto")
        self.assertEqual(file_protos(out[4])[0].name, "agentz/v1/system.proto")

    def test_reflected_pool_builds_messages(self):
        r = reflected()
        Agent = r.msg("agentz.v1.Agent")
        a = Agent(role="r", tools=["calculator"])
        a.labels["k"] = "v"
        a.llm.temperature.value = 0.5
        b = Agent.FromString(a.SerializeToString())
        self.assertEqual(b.labels["k"], "v")
        self.assertAlmostEqual(b.llm.temperature.value, 0.5)


class T02ReflectionV1Alpha(unittest.TestCase):
    def test_list_services(self):
        resp = reflect_once("v1alpha", list_services="*")
        self.assertEqual(resp.WhichOneof("message_response"), "list_services_response", resp)
        names = {s.name for s in resp.list_services_response.service}
        for want in ("agentz.v1.AgentService", "agentz.v1.TaskService", "agentz.v1.WorkflowService",
                     "agentz.v1.SystemService", "grpc.health.v1.Health"):
            self.assertIn(want, names)

    def test_file_containing_symbol(self):
        resp = reflect_once("v1alpha", file_containing_symbol="agentz.v1.AgentService")
        self.assertEqual(resp.WhichOneof("message_response"), "file_descriptor_response", resp)
        fd = descriptor_pb2.FileDescriptorProto.FromString(
            resp.file_descriptor_response.file_descriptor_proto[0])
        self.assertEqual(fd.name, "agentz/v1/agent.proto")


class T03Health(unittest.TestCase):
    def check(self, service, timeout=TIMEOUT):
        call = CHANNEL.unary_unary("/grpc.health.v1.Health/Check",
                                   request_serializer=HEALTH_PB2.HealthCheckRequest.SerializeToString,
                                   response_deserializer=HEALTH_PB2.HealthCheckResponse.FromString)
        return call(HEALTH_PB2.HealthCheckRequest(service=service), timeout=timeout)

    def test_check_overall(self):
        self.assertEqual(self.check("").status, HEALTH_PB2.HealthCheckResponse.SERVING)

    def test_check_agent_service(self):
        self.assertEqual(self.check("agentz.v1.AgentService").status,
                         HEALTH_PB2.HealthCheckResponse.SERVING)

    def test_check_unknown_service(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.check("nope")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_watch_first_message_serving(self):
        call = CHANNEL.unary_stream("/grpc.health.v1.Health/Watch",
                                    request_serializer=HEALTH_PB2.HealthCheckRequest.SerializeToString,
                                    response_deserializer=HEALTH_PB2.HealthCheckResponse.FromString)
        it = call(HEALTH_PB2.HealthCheckRequest(service=""), timeout=TIMEOUT)
        first = next(it)
        self.assertEqual(first.status, HEALTH_PB2.HealthCheckResponse.SERVING)
        it.cancel()
        with self.assertRaises(grpc.RpcError) as cm:
            next(it)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.CANCELLED)
        # the server is fine after the cancelled stream
        self.assertEqual(self.check("").status, HEALTH_PB2.HealthCheckResponse.SERVING)


# --------------------------------------------------------------------------------------------

class AgentsBase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.r = reflected()
        cls.Agent = cls.r.msg("agentz.v1.Agent")
        cls.IDLE = cls.r.enum_value("agentz.v1.AgentStatus", "AGENT_STATUS_IDLE")

    def call(self, method, request=None, timeout=TIMEOUT, metadata=None, with_call=False, **fields):
        path, Req, Resp = self.r.method("agentz.v1.AgentService", method)
        if request is None:
            request = Req(**fields)
        stub = CHANNEL.unary_unary(path, request_serializer=Req.SerializeToString,
                                   response_deserializer=Resp.FromString)
        if with_call:
            return stub.with_call(request, timeout=timeout, metadata=metadata)
        return stub(request, timeout=timeout, metadata=metadata)

    def assertCode(self, code, method, *, contains=(), **kw):
        with self.assertRaises(grpc.RpcError) as cm:
            self.call(method, **kw)
        e = cm.exception
        self.assertEqual(e.code(), code, "%s: %s" % (method, e.details()))
        for s in ([contains] if isinstance(contains, str) else contains):
            self.assertIn(s, e.details() or "")
        return e

    def new_agent(self, **over):
        a = self.Agent(role="Senior Data Researcher", goal="Find facts", backstory="Curious.")
        for k, v in over.items():
            if k == "labels":
                a.labels.update(v)
            elif k == "tools":
                a.tools.extend(v)
            else:
                setattr(a, k, v)
        return a

    def create(self, agent=None, request_id="", **over):
        _, Req, _ = self.r.method("agentz.v1.AgentService", "CreateAgent")
        req = Req(request_id=request_id)
        req.agent.CopyFrom(agent if agent is not None else self.new_agent(**over))
        return self.call("CreateAgent", request=req)


class T04Agents(AgentsBase):
    def test_create_get(self):
        a = self.new_agent(labels={"team": "research", "suite": uuid.uuid4().hex},
                           tools=["calculator"], name="py-" + uuid.uuid4().hex[:12])
        a.llm.provider = "openai"
        a.llm.model = "gpt-4o-mini"
        a.llm.temperature.value = 0.25
        a.max_execution_time.seconds = 90
        a.max_execution_time.nanos = 500000000
        a.id = "ignored-output-only"
        got = self.create(a)
        self.assertRegex(got.id, UUID_RE)
        self.assertTrue(got.etag)
        self.assertEqual(got.status, self.IDLE)
        self.assertEqual(got.max_iter, 25)
        self.assertGreater(got.create_time.seconds, 1600000000)
        self.assertEqual(got.role, a.role)
        self.assertEqual(got.goal, a.goal)
        self.assertEqual(got.backstory, a.backstory)
        self.assertEqual(got.name, a.name)
        self.assertEqual(dict(got.labels), dict(a.labels))
        self.assertEqual(list(got.tools), ["calculator"])
        self.assertTrue(got.llm.HasField("temperature"))
        self.assertAlmostEqual(got.llm.temperature.value, 0.25)
        self.assertEqual(got.llm.model, "gpt-4o-mini")
        self.assertEqual((got.max_execution_time.seconds, got.max_execution_time.nanos),
                         (90, 500000000))
        again = self.call("GetAgent", id=got.id)
        self.assertEqual(again, got)

    def test_list_pagination(self):
        suite = str(uuid.uuid4())
        ids = [self.create(labels={"suite": suite, "n": str(i)}).id for i in range(5)]
        seen, all_agents, token, pages = [], [], "", 0
        while True:
            resp = self.call("ListAgents", page_size=2, page_token=token,
                             label_selector="suite=" + suite)
            pages += 1
            self.assertLessEqual(len(resp.agents), 2)
            self.assertEqual(resp.total_size, 5)
            seen.extend(a.id for a in resp.agents)
            all_agents.extend(resp.agents)
            token = resp.next_page_token
            if not token:
                break
            self.assertLess(pages, 10, "pagination does not end")
        self.assertEqual(pages, 3)
        self.assertEqual(len(seen), len(set(seen)), "duplicates across pages")
        self.assertEqual(sorted(seen), sorted(ids))
        # the server returns newest first: create_time DESC, id DESC
        times = [(a.create_time.seconds, a.create_time.nanos, a.id) for a in all_agents]
        self.assertEqual(times, sorted(times, reverse=True), "not ordered by create_time, id")
        # two selector pairs must both match
        resp = self.call("ListAgents", label_selector="suite=%s,n=3" % suite)
        self.assertEqual([a.id for a in resp.agents], [ids[3]])
        self.assertEqual(resp.total_size, 1)
        self.assertEqual(resp.next_page_token, "")

    def test_update_mask_and_etag(self):
        a = self.create(goal="old goal", backstory="old story")
        upd = self.Agent(id=a.id, goal="new goal", backstory="SHOULD NOT APPLY", role="nope")
        _, Req, _ = self.r.method("agentz.v1.AgentService", "UpdateAgent")
        req = Req()
        req.agent.CopyFrom(upd)
        req.update_mask.paths.append("goal")
        b = self.call("UpdateAgent", request=req)
        self.assertEqual(b.goal, "new goal")
        self.assertEqual(b.backstory, "old story")
        self.assertEqual(b.role, a.role)
        self.assertNotEqual(b.etag, a.etag)
        self.assertEqual(b.id, a.id)
        self.assertEqual(self.call("GetAgent", id=a.id), b)

        # stale etag -> ABORTED; the current one works
        req.agent.etag = a.etag
        self.assertCode(grpc.StatusCode.ABORTED, "UpdateAgent", request=req)
        req.agent.etag = b.etag
        req.agent.goal = "newer goal"
        c = self.call("UpdateAgent", request=req)
        self.assertEqual(c.goal, "newer goal")

        for bad in ("id", "no_such_field"):
            with self.subTest(path=bad):
                req2 = Req()
                req2.agent.CopyFrom(upd)
                req2.update_mask.paths.append(bad)
                self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, "UpdateAgent", request=req2,
                                contains=bad)

    def _update_goal(self, agent_id, goal, etag=""):
        _, Req, _ = self.r.method("agentz.v1.AgentService", "UpdateAgent")
        req = Req()
        req.agent.id = agent_id
        req.agent.goal = goal
        req.agent.etag = etag
        req.update_mask.paths.append("goal")
        return req

    def test_delete(self):
        a = self.create()
        b = self.call("UpdateAgent", request=self._update_goal(a.id, "changed"))
        self.assertNotEqual(a.etag, b.etag)
        self.assertCode(grpc.StatusCode.ABORTED, "DeleteAgent", id=a.id, etag=a.etag)
        self.assertEqual(self.call("GetAgent", id=a.id), b)
        self.call("DeleteAgent", id=a.id, etag=b.etag)
        self.assertCode(grpc.StatusCode.NOT_FOUND, "GetAgent", id=a.id)
        self.assertCode(grpc.StatusCode.NOT_FOUND, "DeleteAgent", id=a.id)
        self.assertCode(grpc.StatusCode.NOT_FOUND, "UpdateAgent",
                        request=self._update_goal(a.id, "gone"))

    def test_etag_that_never_matches_is_aborted(self):
        # Contract: an etag that is set must equal the current one, else ABORTED, also when it is
        # ahead of the current revision.
        a = self.create()
        self.assertCode(grpc.StatusCode.ABORTED, "UpdateAgent",
                        request=self._update_goal(a.id, "must not apply", etag="999999"))
        self.assertEqual(self.call("GetAgent", id=a.id).goal, a.goal)
        self.assertCode(grpc.StatusCode.ABORTED, "DeleteAgent", id=a.id, etag="999999")
        self.assertEqual(self.call("GetAgent", id=a.id).id, a.id)
        self.call("DeleteAgent", id=a.id)

    def test_update_empty_mask_and_star(self):
        a = self.create(labels={"keep": "me"}, tools=["calculator"], max_rpm=7)
        _, Req, _ = self.r.method("agentz.v1.AgentService", "UpdateAgent")
        # empty mask: every populated field of the request, nothing else
        req = Req()
        req.agent.id = a.id
        req.agent.backstory = "new story"
        b = self.call("UpdateAgent", request=req)
        self.assertEqual(b.backstory, "new story")
        self.assertEqual((b.role, b.goal, dict(b.labels), list(b.tools), b.max_rpm),
                         (a.role, a.goal, {"keep": "me"}, ["calculator"], 7))
        # "*": full replacement; unset writable fields are cleared
        req = Req()
        req.agent.id = a.id
        req.agent.role, req.agent.goal, req.agent.backstory = "R2", "G2", "B2"
        req.agent.max_iter = 3
        req.update_mask.paths.append("*")
        c = self.call("UpdateAgent", request=req)
        self.assertEqual((c.role, c.goal, c.backstory, c.max_iter), ("R2", "G2", "B2", 3))
        self.assertEqual((dict(c.labels), list(c.tools), c.max_rpm), ({}, [], 0))
        self.assertEqual(c.create_time, a.create_time)
        # "*" without a required field is rejected and changes nothing
        req.agent.role = ""
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, "UpdateAgent", request=req,
                        contains="agent.role")
        self.assertEqual(self.call("GetAgent", id=a.id), c)

    def test_duplicate_name(self):
        name = "dup-" + uuid.uuid4().hex[:16]
        self.create(name=name)
        self.assertCode(grpc.StatusCode.ALREADY_EXISTS, "CreateAgent",
                        request=self._create_req(self.new_agent(name=name)), contains=name)

    def test_idempotent_create(self):
        rid = str(uuid.uuid4())
        agent = self.new_agent(goal="idempotent")
        first = self.create(agent, request_id=rid)
        second = self.create(agent, request_id=rid)
        self.assertEqual(second.id, first.id)
        self.assertEqual(second.etag, first.etag)
        other = self.new_agent(goal="something else")
        self.assertCode(grpc.StatusCode.ALREADY_EXISTS, "CreateAgent",
                        request=self._create_req(other, rid))

    def _create_req(self, agent, request_id=""):
        _, Req, _ = self.r.method("agentz.v1.AgentService", "CreateAgent")
        req = Req(request_id=request_id)
        req.agent.CopyFrom(agent)
        return req

    def test_validation(self):
        INVALID = grpc.StatusCode.INVALID_ARGUMENT
        no_role = self.new_agent()
        no_role.role = ""
        self.assertCode(INVALID, "CreateAgent", request=self._create_req(no_role),
                        contains="agent.role")
        self.assertCode(INVALID, "CreateAgent", request=self._create_req(self.new_agent(max_iter=101)),
                        contains="max_iter")
        self.assertCode(INVALID, "CreateAgent",
                        request=self._create_req(self.new_agent(tools=["rm_rf"])), contains="rm_rf")
        hot = self.new_agent()
        hot.llm.temperature.value = 2.5
        self.assertCode(INVALID, "CreateAgent", request=self._create_req(hot), contains="temperature")
        self.assertCode(INVALID, "CreateAgent",
                        request=self._create_req(self.new_agent(role="x" * 257)), contains="agent.role")
        self.assertCode(INVALID, "ListAgents", page_size=-1, contains="page_size")
        self.assertCode(INVALID, "ListAgents", page_token="garbage!!not-a-token")
        self.assertCode(grpc.StatusCode.NOT_FOUND, "GetAgent", id="not-a-uuid")
        self.assertCode(grpc.StatusCode.NOT_FOUND, "GetAgent", id=str(uuid.uuid4()))

    def test_boundaries_accepted(self):
        a = self.create(role="x" * 256, max_iter=100, max_rpm=100000,
                        tools=["http_fetch", "current_time", "calculator"])
        self.assertEqual(len(a.role), 256)
        self.assertEqual(a.max_iter, 100)
        self.assertEqual(a.max_rpm, 100000)
        self.call("DeleteAgent", id=a.id)


class T05Unimplemented(AgentsBase):
    def test_unknown_method(self):
        stub = CHANNEL.unary_unary("/agentz.v1.Nope/Nope")
        t0 = time.monotonic()
        with self.assertRaises(grpc.RpcError) as cm:
            stub(b"", timeout=5)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        self.assertLess(time.monotonic() - t0, 2.0)

    def test_task_service_found_by_reflection_answers(self):
        # Methods discovered by reflection are callable with reflected message classes.
        r = Reflected(["agentz.v1.TaskService"])
        path, Req, Resp = r.method("agentz.v1.TaskService", "ListTasks")
        stub = CHANNEL.unary_unary(path, request_serializer=Req.SerializeToString,
                                   response_deserializer=Resp.FromString)
        resp = stub(Req(page_size=1), timeout=5)
        self.assertLessEqual(len(resp.tasks), 1)
        with self.assertRaises(grpc.RpcError) as cm:
            stub(Req(page_size=-1), timeout=5)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)


class T06Metadata(AgentsBase):
    def test_request_id_generated(self):
        ids = set()
        for _ in range(3):
            _, call = self.call("ListAgents", page_size=1, with_call=True)
            md = dict(call.initial_metadata())
            self.assertIn("x-request-id", md)
            self.assertTrue(md["x-request-id"])
            ids.add(md["x-request-id"])
        self.assertEqual(len(ids), 3, "request ids are not unique")

    def test_request_id_on_error(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.call("GetAgent", id=str(uuid.uuid4()))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertIn("x-request-id", dict(cm.exception.initial_metadata()))

    def test_request_id_echoed(self):
        rid = "py-" + uuid.uuid4().hex
        _, call = self.call("ListAgents", page_size=1, with_call=True,
                            metadata=[("x-request-id", rid)])
        self.assertEqual(dict(call.initial_metadata()).get("x-request-id"), rid)

    def test_request_id_on_reflection_and_health(self):
        pb = REFL["v1"]
        it = reflection_stream("v1", [pb.ServerReflectionRequest(list_services="*")])
        list(it)
        self.assertIn("x-request-id", dict(it.initial_metadata()))
        call = CHANNEL.unary_unary("/grpc.health.v1.Health/Check",
                                   request_serializer=HEALTH_PB2.HealthCheckRequest.SerializeToString,
                                   response_deserializer=HEALTH_PB2.HealthCheckResponse.FromString)
        _, c = call.with_call(HEALTH_PB2.HealthCheckRequest(), timeout=TIMEOUT,
                              metadata=[("x-request-id", "health-echo-1")])
        self.assertEqual(dict(c.initial_metadata()).get("x-request-id"), "health-echo-1")


class T07Deadline(AgentsBase):
    def test_tiny_deadline(self):
        # A deadline the server may meet (ListAgents can answer within 1 ms): each answer is the
        # list or DEADLINE_EXCEEDED, and the shortest ones cannot be met.
        exceeded = 0
        for timeout in (0.001, 0.0005, 0.0002, 0.0001, 0.00005):
            try:
                self.call("ListAgents", page_size=1000, timeout=timeout)
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.DEADLINE_EXCEEDED, e)
                exceeded += 1
        self.assertGreater(exceeded, 0, "a 50 µs deadline was met")
        # A 1 ms deadline may or may not be met by a create on a fast machine; either way the
        # answer is a created agent or DEADLINE_EXCEEDED, nothing else.
        for _ in range(3):
            try:
                self.call("CreateAgent", request=self._req(), timeout=0.001)
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        # the server is unharmed
        resp = self.call("ListAgents", page_size=1)
        self.assertLessEqual(len(resp.agents), 1)
        self.assertEqual(SERVER.poll(), None, "agentzd died; log tail:\n" + log_tail())

    def _req(self):
        _, Req, _ = self.r.method("agentz.v1.AgentService", "CreateAgent")
        req = Req()
        req.agent.CopyFrom(self.new_agent())
        return req


class T08Auth(AgentsBase):
    """Authentication as seen by a client we did not write. Skipped while the server does not
    enforce it (no admin key file) or does not implement SystemService yet."""

    def _list_agents(self, channel, metadata=None):
        path, Req, Resp = self.r.method("agentz.v1.AgentService", "ListAgents")
        stub = channel.unary_unary(path, request_serializer=Req.SerializeToString,
                                   response_deserializer=Resp.FromString)
        return stub(Req(page_size=1), timeout=TIMEOUT, metadata=metadata)

    def test_no_credentials_unauthenticated(self):
        if ADMIN_KEY is None:
            self.skipTest("the server wrote no admin.key: authentication is not enforced")
        for md in (None, [("authorization", "Bearer agz_not-a-real-key")],
                   [("x-api-key", "agz_not-a-real-key")], [("authorization", "Basic Zm9vOmJhcg==")]):
            with self.subTest(metadata=md and md[0][0]):
                with self.assertRaises(grpc.RpcError) as cm:
                    self._list_agents(RAW_CHANNEL, md)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED,
                                 cm.exception.details())
                self.assertNotIn("agz_not-a-real-key", cm.exception.details() or "")
        # both ways of presenting the key work, and health and reflection stay public
        self._list_agents(RAW_CHANNEL, [("authorization", "Bearer " + ADMIN_KEY)])
        self._list_agents(RAW_CHANNEL, [("x-api-key", ADMIN_KEY)])
        health = RAW_CHANNEL.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=HEALTH_PB2.HealthCheckRequest.SerializeToString,
            response_deserializer=HEALTH_PB2.HealthCheckResponse.FromString)
        self.assertEqual(health(HEALTH_PB2.HealthCheckRequest(), timeout=TIMEOUT).status,
                         HEALTH_PB2.HealthCheckResponse.SERVING)
        pb = REFL["v1"]
        refl = RAW_CHANNEL.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=pb.ServerReflectionRequest.SerializeToString,
            response_deserializer=pb.ServerReflectionResponse.FromString)
        out = list(refl(iter([pb.ServerReflectionRequest(list_services="*")]), timeout=TIMEOUT))
        self.assertEqual(out[0].WhichOneof("message_response"), "list_services_response")

    def test_whoami_is_the_admin(self):
        r = Reflected(["agentz.v1.SystemService"])
        path, Req, Resp = r.method("agentz.v1.SystemService", "WhoAmI")
        stub = CHANNEL.unary_unary(path, request_serializer=Req.SerializeToString,
                                   response_deserializer=Resp.FromString)
        try:
            me = stub(Req(), timeout=TIMEOUT)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                self.skipTest("SystemService.WhoAmI is not implemented yet")
            raise
        if ADMIN_KEY is None:
            self.skipTest("the server wrote no admin.key: no admin principal to check")
        self.assertTrue(me.principal, me)
        self.assertNotIn(ADMIN_KEY, me.principal)
        self.assertRegex(me.workspace_id, UUID_RE)
        self.assertEqual(me.role, r.enum_value("agentz.v1.Role", "ROLE_OWNER"), me)
        self.assertNotEqual(me.auth_method,
                            r.enum_value("agentz.v1.AuthMethod", "AUTH_METHOD_NONE"), me)


if __name__ == "__main__":
    unittest.main()
