"""Watch streams through a client we did not write: Debian's python3-grpcio watches workflow runs
and tasks of the real agentzd (API and worker) end to end, against a minimal OpenAI-compatible
provider written here (stdlib http.server, server-sent events). Checks the contract of issue 5:
order and completeness of a run's events (gap-free sequences from 1, ending with OK after the
run's terminal event), resume after a cancelled stream with no gap and no duplicate, token
deltas that concatenate to the task's output, and the error codes.

Run with the system interpreter (the one that has grpc):

    AGENTZD=build/bin/agentzd AGENTZ_TEST_DIR=/tmp/agentz-test \
        /usr/bin/python3 -m unittest tests/python/test_watch.py -v

setUpModule starts one agentzd with its embedded PostgreSQL/Redis under
$AGENTZ_TEST_DIR/python-watch. Message classes come from the server's own reflection, as in
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
WATCH_TIMEOUT = 60.0

SERVER = None
LOG_PATH = None
CHANNEL = None
METADATA = ()
GEN_DIR = None
FAKE = None
POOL = None
FACTORY = None


def log_tail(n=40):
    try:
        with open(LOG_PATH, "r", errors="replace") as f:
            return "".join([l for l in f if 'msg="rpc"' not in l][-n:])
    except (OSError, TypeError):
        return "(no log)"


# --------------------------------------------------------------------------------------------
# a minimal OpenAI-compatible provider; each model has its own answer, delay and chunk size

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
        answer, delay, chunk = self.server.replies.get(model, ("ok", 0.0, 4))
        if delay:
            time.sleep(delay)
        if not body.get("stream"):
            out = json.dumps({
                "id": "chatcmpl-py", "object": "chat.completion", "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()

        def event(obj):
            self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
            self.wfile.flush()

        def delta(d, finish=None):
            return {"id": "chatcmpl-py", "object": "chat.completion.chunk",
                    "created": int(time.time()), "model": model,
                    "choices": [{"index": 0, "delta": d, "finish_reason": finish}]}

        event(delta({"role": "assistant", "content": ""}))
        for i in range(0, len(answer), chunk):
            event(delta({"content": answer[i:i + chunk]}))
        event(delta({}, "stop"))
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


class FakeProvider:
    def __init__(self):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeHandler)
        self.httpd.daemon_threads = True
        self.httpd.replies = {}
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def base_url(self):
        return "http://127.0.0.1:%d/v1" % self.httpd.server_address[1]

    def on(self, model, answer, delay=0.0, chunk=4):
        self.httpd.replies[model] = (answer, delay, chunk)

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
    global GEN_DIR
    GEN_DIR = tempfile.mkdtemp(prefix="agentz-pywatch-")
    rel = "grpc/reflection/v1/reflection.proto"
    subprocess.run(["protoc", "-I", GRPC_PROTO_DIR, "--python_out=" + GEN_DIR, rel], check=True)
    pb = _load_module("_az_watch_reflection_v1_pb2",
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
    global SERVER, LOG_PATH, CHANNEL, METADATA, FAKE, POOL, FACTORY
    if not os.access(AGENTZD, os.X_OK):
        raise RuntimeError("agentzd not found at %s (set AGENTZD)" % AGENTZD)
    FAKE = FakeProvider()
    data_dir = os.path.join(TEST_DIR, "python-watch")
    os.makedirs(data_dir, exist_ok=True)
    LOG_PATH = os.path.join(TEST_DIR, "python-watch-agentzd.log")
    drop = ("AGENTZ_DATABASE_URL", "AGENTZ_REDIS_URL", "AGENTZ_LLM_BASE_URL", "AGENTZ_LLM_API_KEY",
            "AGENTZ_LLM_MODEL", "AGENTZ_LLM_PROVIDER", "OPENAI_API_KEY", "OPENAI_BASE_URL",
            "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "AGENTZ_ALLOW_PRIVATE_NETWORKS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    for k in ("AGENTZ_RATE_LIMIT", "AGENTZ_RATE_LIMIT_WORKSPACE", "AGENTZ_RATE_LIMIT_EXPENSIVE"):
        env.setdefault(k, "0")
    env["AGENTZ_STREAM_HEARTBEAT"] = "1s"
    try:
        SERVER, address = azproc.start([AGENTZD, "--data-dir", data_dir, "--listen", "127.0.0.1:0"], env, LOG_PATH)
    except RuntimeError as e:
        raise RuntimeError("%s; %s" % (e, log_tail()))
    CHANNEL = grpc.insecure_channel(address)
    grpc.channel_ready_future(CHANNEL).result(timeout=10)
    try:
        with open(os.path.join(data_dir, "admin.key")) as f:
            METADATA = (("authorization", "Bearer " + f.read().strip()),)
    except OSError:
        METADATA = ()
    POOL = _reflect(["agentz.v1.AgentService", "agentz.v1.TaskService",
                     "agentz.v1.WorkflowService"])
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


def _method(service, method):
    sd = POOL.FindServiceByName(service)
    md = sd.methods_by_name[method]
    return ("/%s/%s" % (sd.full_name, md.name), FACTORY.GetPrototype(md.input_type),
            FACTORY.GetPrototype(md.output_type))


def rpc(service, method, request_json):
    path, req_cls, resp_cls = _method(service, method)
    call = CHANNEL.unary_unary(path, request_serializer=req_cls.SerializeToString,
                               response_deserializer=resp_cls.FromString)
    return call(json_format.ParseDict(request_json, req_cls()), timeout=TIMEOUT, metadata=METADATA)


def watch(service, method, request_json, timeout=WATCH_TIMEOUT):
    """Starts a server-streaming call; returns the call object (an iterator of events)."""
    path, req_cls, resp_cls = _method(service, method)
    call = CHANNEL.unary_stream(path, request_serializer=req_cls.SerializeToString,
                                response_deserializer=resp_cls.FromString)
    return call(json_format.ParseDict(request_json, req_cls()), timeout=timeout, metadata=METADATA)


def enum_value(enum_name, value_name):
    return POOL.FindEnumTypeByName(enum_name).values_by_name[value_name].number


def durable(events):
    return [e for e in events if e.sequence > 0]


def make_agent(model):
    return rpc("agentz.v1.AgentService", "CreateAgent", {"agent": {
        "role": "Python Watched Agent " + model, "goal": "Be watched", "backstory": "From Python.",
        "llm": {"provider": "openai", "model": model, "baseUrl": FAKE.base_url}}})


def start_run(agent_id, steps):
    wf = rpc("agentz.v1.WorkflowService", "CreateWorkflow", {"workflow": {
        "name": "py-watch-" + uuid.uuid4().hex[:12], "process": "PROCESS_SEQUENTIAL",
        "steps": [{"id": "s%d" % i, "agentId": agent_id, "description": "Python step %d" % i,
                   "expectedOutput": "text"} for i in range(1, steps + 1)]}})
    return rpc("agentz.v1.WorkflowService", "StartRun", {"workflowId": wf.id})


# --------------------------------------------------------------------------------------------

class T01WatchRun(unittest.TestCase):
    def test_order_completeness_and_resume(self):
        model = "py-watch-" + uuid.uuid4().hex[:12]
        FAKE.on(model, "Python-watched output.", delay=0.4)
        agent = make_agent(model)
        run = start_run(agent.id, 2)

        live = list(watch("agentz.v1.WorkflowService", "WatchRun", {"runId": run.id}))
        events = durable(live)
        self.assertEqual([e.sequence for e in events], list(range(1, len(events) + 1)),
                         "sequences are not 1..N\n" + log_tail(20))
        self.assertTrue(all(e.run_id == run.id for e in events))
        runs = [e for e in events if e.WhichOneof("payload") == "run_status"]
        self.assertTrue(runs, "no run status events")
        self.assertEqual(getattr(runs[-1].run_status, "to"),
                         enum_value("agentz.v1.RunStatus", "RUN_STATUS_SUCCEEDED"))
        got = rpc("agentz.v1.WorkflowService", "GetRun", {"id": run.id})
        succeeded = enum_value("agentz.v1.TaskStatus", "TASK_STATUS_SUCCEEDED")
        for step in got.steps:
            changes = [getattr(e.task_status, "to") for e in events
                       if e.WhichOneof("payload") == "task_status" and e.task_id == step.task_id]
            self.assertTrue(changes and changes[-1] == succeeded,
                            "step %s: task status changes %s" % (step.step_id, changes))
        # The run's terminal event comes after every task's.
        last_task = max(i for i, e in enumerate(events) if e.WhichOneof("payload") == "task_status")
        self.assertGreater(events.index(runs[-1]), last_task)

        # Resume after a cancelled stream, from the last sequence seen: no gap, no duplicate.
        first = watch("agentz.v1.WorkflowService", "WatchRun", {"runId": run.id})
        part = []
        for e in first:
            if e.sequence > 0:
                part.append(e)
            if len(part) == 2:
                first.cancel()
                break
        rest = durable(watch("agentz.v1.WorkflowService", "WatchRun",
                             {"runId": run.id, "afterSequence": str(part[-1].sequence)}))
        self.assertEqual([e.SerializeToString() for e in part + rest],
                         [e.SerializeToString() for e in events])

    def test_finished_run_replays_and_ends(self):
        model = "py-watch-" + uuid.uuid4().hex[:12]
        FAKE.on(model, "done")
        agent = make_agent(model)
        run = start_run(agent.id, 1)
        first = durable(watch("agentz.v1.WorkflowService", "WatchRun", {"runId": run.id}))
        call = watch("agentz.v1.WorkflowService", "WatchRun",
                     {"runId": run.id, "afterSequence": str(first[-1].sequence)})
        self.assertEqual(durable(list(call)), [])
        self.assertEqual(call.code(), grpc.StatusCode.OK)


class T02WatchTaskTokens(unittest.TestCase):
    def test_token_deltas_equal_the_output(self):
        model = "py-tokens-" + uuid.uuid4().hex[:12]
        answer = "".join("Python token %d, \u00e9t\u00e9 \"q\"; " % i for i in range(40))
        FAKE.on(model, answer, delay=1.5, chunk=5)
        agent = make_agent(model)
        task = rpc("agentz.v1.TaskService", "CreateTask", {"task": {
            "description": "Stream tokens to Python", "expectedOutput": "text",
            "agentId": agent.id}})
        call = watch("agentz.v1.TaskService", "WatchTask",
                     {"taskId": task.id, "includeTokens": True})
        events = list(call)
        self.assertEqual(call.code(), grpc.StatusCode.OK)
        tokens = [e for e in events if e.WhichOneof("payload") == "token"]
        self.assertTrue(all(e.sequence == 0 for e in tokens))
        got = rpc("agentz.v1.TaskService", "GetTask", {"id": task.id})
        self.assertEqual(got.status, enum_value("agentz.v1.TaskStatus", "TASK_STATUS_SUCCEEDED"))
        self.assertEqual("".join(e.token.text for e in tokens), got.output.raw,
                         "%d deltas\n%s" % (len(tokens), log_tail(20)))
        self.assertGreater(len(tokens), 50)


class T02bWatchRunTokens(unittest.TestCase):
    def test_run_token_deltas_per_step(self):
        model = "py-run-tokens-" + uuid.uuid4().hex[:12]
        answer = "".join("run token %d; " % i for i in range(30))
        FAKE.on(model, answer, delay=0.8, chunk=7)
        agent = make_agent(model)
        run = start_run(agent.id, 2)
        call = watch("agentz.v1.WorkflowService", "WatchRun",
                     {"runId": run.id, "includeTokens": True})
        events = list(call)
        self.assertEqual(call.code(), grpc.StatusCode.OK)
        tokens = [e for e in events if e.WhichOneof("payload") == "token"]
        self.assertTrue(tokens, "no token deltas on WatchRun\n" + log_tail(20))
        self.assertTrue(all(e.sequence == 0 and e.run_id == run.id for e in tokens))
        got = rpc("agentz.v1.WorkflowService", "GetRun", {"id": run.id})
        self.assertEqual(len(got.steps), 2)
        for step in got.steps:
            text = "".join(e.token.text for e in tokens if e.task_id == step.task_id)
            self.assertEqual(text, step.output.raw, "step %s" % step.step_id)
        # Without include_tokens a replay carries none.
        plain = list(watch("agentz.v1.WorkflowService", "WatchRun", {"runId": run.id}))
        self.assertFalse([e for e in plain if e.WhichOneof("payload") == "token"])


class T03Errors(unittest.TestCase):
    def assert_status(self, method, service, request, code):
        with self.assertRaises(grpc.RpcError) as cm:
            list(watch(service, method, request, timeout=TIMEOUT))
        self.assertEqual(cm.exception.code(), code, cm.exception.details())

    def test_not_found_and_invalid(self):
        unknown = str(uuid.uuid4())
        self.assert_status("WatchRun", "agentz.v1.WorkflowService", {"runId": unknown},
                           grpc.StatusCode.NOT_FOUND)
        self.assert_status("WatchRun", "agentz.v1.WorkflowService", {"runId": "nope"},
                           grpc.StatusCode.INVALID_ARGUMENT)
        self.assert_status("WatchTask", "agentz.v1.TaskService", {"taskId": unknown},
                           grpc.StatusCode.NOT_FOUND)
        self.assert_status("WatchTask", "agentz.v1.TaskService", {"taskId": "nope"},
                           grpc.StatusCode.INVALID_ARGUMENT)


if __name__ == "__main__":
    unittest.main()
