"""The execution engine through a client we did not write: Debian's python3-grpcio runs one task
end to end through the real agentzd against a minimal OpenAI-compatible provider written here
(stdlib http.server, server-sent events), and checks the outcome through the API and what the
provider was sent.

Run with the system interpreter (the one that has grpc):

    AGENTZD=build/bin/agentzd AGENTZ_TEST_DIR=/tmp/agentz-test \
        /usr/bin/python3 -m unittest tests/python/test_engine.py -v

setUpModule starts one agentzd (API and worker) with its embedded PostgreSQL/Redis under
$AGENTZ_TEST_DIR/python-engine. Message classes come from the server's own reflection, as in
test_grpc_python.py; nothing generated is committed.
"""

import http.server
import importlib.util
import json
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
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import azproc  # noqa: E402  (the sibling module, however this file is run)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENTZD = os.environ.get("AGENTZD") or os.path.join(REPO, "build", "bin", "agentzd")
TEST_DIR = os.environ.get("AGENTZ_TEST_DIR") or os.path.join(REPO, "build")
GRPC_PROTO_DIR = "/usr/share/grpc-proto"
READY_RE = re.compile(r"AGENTZ is running: gRPC at (\S+)")
TIMEOUT = 10.0

ANSWER = "Hello from a Python fake provider."
PROMPT_TOKENS = 31
COMPLETION_TOKENS = 9

SERVER = None
LOG_PATH = None
DATA_DIR = None
CHANNEL = None
METADATA = ()
GEN_DIR = None
FAKE = None
POOL = None
FACTORY = None


def log_tail(n=60):
    try:
        with open(LOG_PATH, "r", errors="replace") as f:
            # per-call lines are left out: the test polls
            return "".join([l for l in f if 'msg="rpc"' not in l][-n:])
    except (OSError, TypeError):
        return "(no log)"


# --------------------------------------------------------------------------------------------
# a minimal OpenAI-compatible provider: POST /v1/chat/completions, streamed as SSE when asked

class _FakeHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one response per connection, ended by closing it

    def log_message(self, fmt, *args):  # keep the test output clean
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            self.send_error(400, "body is not JSON")
            return
        self.server.requests.append((self.path, body))
        if not self.path.endswith("/chat/completions"):
            self.send_error(404, "unknown path")
            return
        model = body.get("model", "")
        if not body.get("stream"):
            out = json.dumps({
                "id": "chatcmpl-py", "object": "chat.completion", "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
                          "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()

        def event(obj):
            self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
            self.wfile.flush()

        def chunk(delta, finish=None):
            return {"id": "chatcmpl-py", "object": "chat.completion.chunk",
                    "created": int(time.time()), "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        event(chunk({"role": "assistant", "content": ""}))
        for i in range(0, len(ANSWER), 7):
            event(chunk({"content": ANSWER[i:i + 7]}))
        event(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            event({"id": "chatcmpl-py", "object": "chat.completion.chunk",
                   "created": int(time.time()), "model": model, "choices": [],
                   "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
                             "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


class FakeProvider:
    def __init__(self):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeHandler)
        self.httpd.daemon_threads = True
        self.httpd.requests = []
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self):
        return "http://127.0.0.1:%d/v1" % self.httpd.server_address[1]

    def requests_for(self, model):
        return [b for _, b in list(self.httpd.requests) if b.get("model") == model]

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------------------------
# server and reflection

def _load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _reflect(symbols):
    """A descriptor pool holding the files that define symbols, fetched over reflection v1."""
    global GEN_DIR
    GEN_DIR = tempfile.mkdtemp(prefix="agentz-pyengine-")
    rel = "grpc/reflection/v1/reflection.proto"
    subprocess.run(["protoc", "-I", GRPC_PROTO_DIR, "--python_out=" + GEN_DIR, rel], check=True)
    pb = _load_module("_az_engine_reflection_v1_pb2",
                      os.path.join(GEN_DIR, "grpc/reflection/v1/reflection_pb2.py"))
    call = CHANNEL.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=pb.ServerReflectionRequest.SerializeToString,
        response_deserializer=pb.ServerReflectionResponse.FromString)
    files = {}
    for sym in symbols:
        for resp in call(iter([pb.ServerReflectionRequest(file_containing_symbol=sym)]),
                         timeout=TIMEOUT):
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


def setUpModule():
    global SERVER, LOG_PATH, DATA_DIR, CHANNEL, METADATA, FAKE, POOL, FACTORY
    if not os.access(AGENTZD, os.X_OK):
        raise RuntimeError("agentzd not found at %s (set AGENTZD)" % AGENTZD)
    FAKE = FakeProvider()
    DATA_DIR = os.path.join(TEST_DIR, "python-engine")
    os.makedirs(DATA_DIR, exist_ok=True)
    LOG_PATH = os.path.join(TEST_DIR, "python-engine-agentzd.log")
    drop = ("AGENTZ_DATABASE_URL", "AGENTZ_REDIS_URL", "AGENTZ_LLM_BASE_URL", "AGENTZ_LLM_API_KEY",
            "AGENTZ_LLM_MODEL", "AGENTZ_LLM_PROVIDER", "OPENAI_API_KEY", "OPENAI_BASE_URL",
            "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "AGENTZ_ALLOW_PRIVATE_NETWORKS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    for k in ("AGENTZ_RATE_LIMIT", "AGENTZ_RATE_LIMIT_WORKSPACE", "AGENTZ_RATE_LIMIT_EXPENSIVE"):
        env.setdefault(k, "0")
    try:
        SERVER, address = azproc.start([AGENTZD, "--data-dir", DATA_DIR, "--listen", "127.0.0.1:0"], env, LOG_PATH)
    except RuntimeError as e:
        raise RuntimeError("%s; %s" % (e, log_tail()))
    CHANNEL = grpc.insecure_channel(address)
    grpc.channel_ready_future(CHANNEL).result(timeout=10)
    try:
        with open(os.path.join(DATA_DIR, "admin.key")) as f:
            METADATA = (("authorization", "Bearer " + f.read().strip()),)
    except OSError:
        METADATA = ()
    POOL = _reflect(["agentz.v1.AgentService", "agentz.v1.TaskService"])
    FACTORY = message_factory.MessageFactory(POOL)


def tearDownModule():
    global SERVER
    if CHANNEL is not None:
        CHANNEL.close()
    if GEN_DIR:
        shutil.rmtree(GEN_DIR, ignore_errors=True)
    if FAKE is not None:
        FAKE.stop()
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
    proc.stdout.close()
    if rc != 0:
        raise AssertionError("agentzd exited with %d after SIGTERM; log tail:\n%s" % (rc, log_tail()))


def rpc(service, method, request_json):
    """Calls a unary method with a request given as a dict (proto3 JSON); returns the response."""
    sd = POOL.FindServiceByName(service)
    md = sd.methods_by_name[method]
    req_cls = FACTORY.GetPrototype(md.input_type)
    resp_cls = FACTORY.GetPrototype(md.output_type)
    req = json_format.ParseDict(request_json, req_cls())
    call = CHANNEL.unary_unary("/%s/%s" % (sd.full_name, md.name),
                               request_serializer=req_cls.SerializeToString,
                               response_deserializer=resp_cls.FromString)
    return call(req, timeout=TIMEOUT, metadata=METADATA)


def enum_value(enum_name, value_name):
    return POOL.FindEnumTypeByName(enum_name).values_by_name[value_name].number


# --------------------------------------------------------------------------------------------

class T01OneTask(unittest.TestCase):
    def test_task_runs_against_the_provider(self):
        model = "py-engine-" + uuid.uuid4().hex[:12]
        role = "Python Tested Researcher " + model
        agent = rpc("agentz.v1.AgentService", "CreateAgent", {"agent": {
            "role": role, "goal": "Answer precisely", "backstory": "Tested from Python.",
            "llm": {"provider": "openai", "model": model, "baseUrl": FAKE.base_url}}})
        task = rpc("agentz.v1.TaskService", "CreateTask", {"task": {
            "description": "Say hello to the Python suite", "expectedOutput": "A greeting",
            "agentId": agent.id}})
        terminal = {enum_value("agentz.v1.TaskStatus", n) for n in
                    ("TASK_STATUS_SUCCEEDED", "TASK_STATUS_FAILED", "TASK_STATUS_CANCELLED")}
        deadline = time.monotonic() + 30
        while True:
            got = rpc("agentz.v1.TaskService", "GetTask", {"id": task.id})
            if got.status in terminal or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(got.status, enum_value("agentz.v1.TaskStatus", "TASK_STATUS_SUCCEEDED"),
                         "%s\nlog tail:\n%s" % (got, log_tail(20)))
        self.assertEqual(got.output.raw, ANSWER)
        self.assertEqual(got.attempt, 1)
        self.assertEqual(got.usage.prompt_tokens, PROMPT_TOKENS)
        self.assertEqual(got.usage.completion_tokens, COMPLETION_TOKENS)
        self.assertEqual(got.usage.total_tokens, PROMPT_TOKENS + COMPLETION_TOKENS)
        attempts = rpc("agentz.v1.TaskService", "ListTaskAttempts", {"taskId": task.id})
        self.assertEqual(len(attempts.attempts), 1)
        self.assertEqual(attempts.attempts[0].status,
                         enum_value("agentz.v1.TaskStatus", "TASK_STATUS_SUCCEEDED"))
        self.assertTrue(attempts.attempts[0].worker)

        # What the provider was sent: one streamed chat completion with the persona and the task.
        sent = FAKE.requests_for(model)
        self.assertEqual(len(sent), 1, sent)
        body = sent[0]
        self.assertTrue(body.get("stream"))
        system = "\n".join(m.get("content") or "" for m in body["messages"]
                           if m.get("role") == "system" and isinstance(m.get("content"), str))
        user = "\n".join(m.get("content") or "" for m in body["messages"]
                         if m.get("role") == "user" and isinstance(m.get("content"), str))
        self.assertIn(role, system)
        self.assertIn("Answer precisely", system)
        self.assertIn("Tested from Python.", system)
        self.assertIn("Say hello to the Python suite", user)
        self.assertIn("A greeting", user)


if __name__ == "__main__":
    unittest.main()
