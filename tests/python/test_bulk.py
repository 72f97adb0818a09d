"""TaskService.CreateTasks (the bulk path) through clients we did not write: Debian's
python3-grpcio with message classes built from the committed descriptor set (gen/agentz.desc),
Python's http.client through the gateway's POST /v1/tasks:batchCreate, and the agentz CLI
(`tasks create-batch`) as a subprocess.

    AGENTZD=build/bin/agentzd AGENTZ_TEST_DIR=/tmp/agentz-test \
        /usr/bin/python3 -m unittest tests/python/test_bulk.py -v

setUpModule starts one `agentzd --roles api,gateway` (no worker: the tasks stay queued, so what
is checked is what CreateTasks wrote) with its embedded PostgreSQL/Redis under
$AGENTZ_TEST_DIR/python-bulk.
"""

import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import azproc  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENTZD = os.environ.get("AGENTZD") or os.path.join(REPO, "build", "bin", "agentzd")
AGENTZ_CLI = os.path.join(os.path.dirname(os.path.abspath(AGENTZD)), "agentz")
TEST_DIR = os.environ.get("AGENTZ_TEST_DIR") or os.path.join(REPO, "build")
WEB_RE = re.compile(r"web UI: http://([^/]+)/#token=(\S+)")
TIMEOUT = 30.0

PROC = None
GRPC_ADDR = None
GW = None
KEY = None
CHANNEL = None
POOL = descriptor_pool.DescriptorPool()
FACTORY = message_factory.MessageFactory(POOL)


def msg(name):
    return FACTORY.GetPrototype(POOL.FindMessageTypeByName(name))


def setUpModule():
    global PROC, GRPC_ADDR, GW, KEY, CHANNEL
    if not os.access(AGENTZD, os.X_OK):
        raise RuntimeError("agentzd not found at %s (set AGENTZD)" % AGENTZD)
    fds = descriptor_pb2.FileDescriptorSet()
    with open(os.path.join(REPO, "gen", "agentz.desc"), "rb") as f:
        fds.ParseFromString(f.read())
    for fd in fds.file:  # protoc writes dependencies first
        POOL.Add(fd)
    data_dir = os.path.join(os.path.abspath(TEST_DIR), "python-bulk")
    os.makedirs(data_dir, exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("AGENTZ_DATABASE_URL", "AGENTZ_REDIS_URL", "AGENTZ_ROLES")}
    for k in ("AGENTZ_RATE_LIMIT", "AGENTZ_RATE_LIMIT_WORKSPACE", "AGENTZ_RATE_LIMIT_EXPENSIVE"):
        env[k] = "0"
    log_path = os.path.join(os.path.abspath(TEST_DIR), "python-bulk-agentzd.log")
    # The gateway's ready line ("web UI: …") comes after the gRPC one: read both from stdout.
    with open(log_path, "w") as log:
        PROC = subprocess.Popen([AGENTZD, "--roles", "api,gateway", "--data-dir", data_dir,
                                 "--listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                env=env, text=True)
    deadline = time.monotonic() + 120
    while (GRPC_ADDR is None or GW is None) and time.monotonic() < deadline:
        line = PROC.stdout.readline()
        if not line:
            break
        m = azproc.READY_RE.search(line)
        if m:
            GRPC_ADDR = m.group(1)
        m = WEB_RE.search(line)
        if m:
            GW, KEY = m.group(1), m.group(2)
    if GRPC_ADDR is None or GW is None:
        PROC.kill()
        PROC.wait()
        raise RuntimeError("agentzd did not print its gRPC and gateway addresses (log %s)" % log_path)
    CHANNEL = grpc.insecure_channel(GRPC_ADDR)


def tearDownModule():
    if CHANNEL is not None:
        CHANNEL.close()
    if PROC is not None:
        rc = azproc.stop(PROC)
        if rc != 0:
            raise AssertionError("agentzd exited %r after SIGTERM" % rc)


def rpc(method, request, response):
    call = CHANNEL.unary_unary("/agentz.v1.TaskService/" + method if "/" not in method else method,
                               request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=response.FromString)
    return call(request, timeout=TIMEOUT, metadata=[("authorization", "Bearer " + KEY)])


def rest(method, path, body=None):
    conn = http.client.HTTPConnection(GW, timeout=TIMEOUT)
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": "Bearer " + KEY}
    if data is not None:
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    r = conn.getresponse()
    out = r.read()
    conn.close()
    return r.status, (json.loads(out) if out else None)


def make_agent(name):
    st, a = rest("POST", "/v1/agents", {"name": name, "role": "Bulk", "goal": "Work",
                                        "backstory": "Made by test_bulk."})
    if st != 200:
        raise AssertionError("CreateAgent: HTTP %d %r" % (st, a))
    return a["id"]


def tasks_of(agent_id):
    st, r = rest("GET", "/v1/tasks?agentId=%s&pageSize=1000" % agent_id)
    if st != 200:
        raise AssertionError("ListTasks: HTTP %d %r" % (st, r))
    return r.get("tasks", [])


class T01Grpc(unittest.TestCase):
    """python3-grpcio against the gRPC port."""

    def batch(self, agent, descs, request_ids=None):
        Req, Item, Task = (msg("agentz.v1.CreateTasksRequest"), msg("agentz.v1.CreateTaskRequest"),
                           msg("agentz.v1.Task"))
        req = Req()
        for i, d in enumerate(descs):
            req.requests.append(Item(task=Task(description=d, agent_id=agent),
                                     request_id=(request_ids or {}).get(i, "")))
        return rpc("CreateTasks", req, msg("agentz.v1.CreateTasksResponse"))

    def test_order_and_idempotency(self):
        agent = make_agent("bulk-grpc-%s" % uuid.uuid4().hex[:8])
        descs = ["grpc item %d" % i for i in range(250)]
        key = "bulk-%s" % uuid.uuid4()
        first = self.batch(agent, descs, {7: key})
        self.assertEqual([t.description for t in first.tasks], descs)
        self.assertTrue(all(t.status == 2 for t in first.tasks))  # TASK_STATUS_QUEUED
        again = self.batch(agent, descs[:10], {7: key})
        self.assertEqual(again.tasks[7].id, first.tasks[7].id)
        self.assertNotEqual(again.tasks[6].id, first.tasks[6].id)
        self.assertEqual(len(tasks_of(agent)), 250 + 9)

    def test_invalid_item_writes_nothing(self):
        agent = make_agent("bulk-grpc-bad-%s" % uuid.uuid4().hex[:8])
        descs = ["fine"] * 5
        descs[3] = ""
        with self.assertRaises(grpc.RpcError) as cm:
            self.batch(agent, descs)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("requests[3].task.description", cm.exception.details())
        with self.assertRaises(grpc.RpcError) as cm:
            self.batch(agent, ["x"] * 1001)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("requests: at most 1000 tasks per call, got 1001", cm.exception.details())
        self.assertEqual(tasks_of(agent), [])

    def test_one_audit_entry_per_call(self):
        agent = make_agent("bulk-audit-%s" % uuid.uuid4().hex[:8])
        rid = "bulk-audit-%s" % uuid.uuid4().hex
        Req, Item, Task = (msg("agentz.v1.CreateTasksRequest"), msg("agentz.v1.CreateTaskRequest"),
                           msg("agentz.v1.Task"))
        req = Req(requests=[Item(task=Task(description="audited %d" % i, agent_id=agent)) for i in range(20)])
        call = CHANNEL.unary_unary("/agentz.v1.TaskService/CreateTasks",
                                   request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=msg("agentz.v1.CreateTasksResponse").FromString)
        call(req, timeout=TIMEOUT, metadata=[("authorization", "Bearer " + KEY), ("x-request-id", rid)])
        # The audit writer batches: poll for the entry.
        deadline, entries = time.monotonic() + 10, []
        while time.monotonic() < deadline:
            st, r = rest("GET", "/v1/auditLog?pageSize=1000")
            self.assertEqual(st, 200, r)
            entries = [e for e in r.get("entries", []) if e.get("requestId") == rid]
            if entries:
                break
            time.sleep(0.2)
        self.assertEqual(len(entries), 1, entries)
        self.assertEqual(entries[0]["method"], "/agentz.v1.TaskService/CreateTasks")
        self.assertEqual(entries[0]["outcome"], "OK")


class T02Gateway(unittest.TestCase):
    """POST /v1/tasks:batchCreate with a JSON body (body "*"), through the gateway."""

    def test_batch_create(self):
        agent = make_agent("bulk-rest-%s" % uuid.uuid4().hex[:8])
        body = {"requests": [{"task": {"agentId": agent, "description": "rest %d" % i,
                                       "labels": {"n": str(i)}}} for i in range(30)]}
        st, r = rest("POST", "/v1/tasks:batchCreate", body)
        self.assertEqual(st, 200, r)
        self.assertEqual([t["description"] for t in r["tasks"]], ["rest %d" % i for i in range(30)])
        self.assertEqual(r["tasks"][29]["labels"], {"n": "29"})
        self.assertEqual(r["tasks"][0]["status"], "TASK_STATUS_QUEUED")
        self.assertEqual(len(tasks_of(agent)), 30)

    def test_errors_name_the_item(self):
        agent = make_agent("bulk-rest-bad-%s" % uuid.uuid4().hex[:8])
        body = {"requests": [{"task": {"agentId": agent, "description": "a"}, "requestId": "k1"},
                             {"task": {"agentId": agent, "description": "b"}, "requestId": "k1"}]}
        st, r = rest("POST", "/v1/tasks:batchCreate", body)
        self.assertEqual(st, 400, r)
        self.assertIn("requests[1].request_id", json.dumps(r))
        st, r = rest("POST", "/v1/tasks:batchCreate", {"requests": []})
        self.assertEqual(st, 400, r)
        self.assertIn("requests: at least 1 task", json.dumps(r))
        # CreateTask's route is not shadowed by the verb.
        st, r = rest("POST", "/v1/tasks", {"agentId": agent, "description": "single"})
        self.assertEqual(st, 200, r)
        self.assertEqual([t["description"] for t in tasks_of(agent)], ["single"])


class T03Cli(unittest.TestCase):
    """build/bin/agentz tasks create-batch, from a file and from stdin."""

    def agentz(self, *args, stdin=None):
        if not os.access(AGENTZ_CLI, os.X_OK):
            self.skipTest("no agentz CLI next to agentzd")
        return subprocess.run([AGENTZ_CLI, "--server", GRPC_ADDR, "--token", KEY] + list(args),
                              input=stdin, capture_output=True, text=True, timeout=60)

    def test_file_and_stdin(self):
        agent = make_agent("bulk-cli-%s" % uuid.uuid4().hex[:8])
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump([{"agentId": agent, "description": "cli %d" % i} for i in range(5)], f)
            path = f.name
        try:
            p = self.agentz("tasks", "create-batch", "-f", path)
            self.assertEqual(p.returncode, 0, p.stderr)
            ids = re.findall(r"^([0-9a-f-]{36})\s+queued", p.stdout, re.M)
            self.assertEqual(len(ids), 5, p.stdout)
            self.assertIn("created 5 tasks", p.stderr)
            # --request-id: the same file again returns the same tasks.
            p1 = self.agentz("--request-id", "cli-" + agent, "-o", "json", "tasks", "create-batch", "-f", path)
            p2 = self.agentz("--request-id", "cli-" + agent, "-o", "json", "tasks", "create-batch", "-f", path)
            self.assertEqual(p1.returncode, 0, p1.stderr)
            self.assertEqual([t["id"] for t in json.loads(p1.stdout)["tasks"]],
                             [t["id"] for t in json.loads(p2.stdout)["tasks"]])
        finally:
            os.unlink(path)
        lines = "\n".join(json.dumps({"agentId": agent, "description": "line %d" % i}) for i in range(3))
        p = self.agentz("-o", "json", "tasks", "create-batch", "-f", "-", stdin=lines + "\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual([t["description"] for t in json.loads(p.stdout)["tasks"]],
                         ["line 0", "line 1", "line 2"])
        self.assertEqual(len(tasks_of(agent)), 5 + 5 + 3)
        # A server-side refusal: exit 1 and the item named.
        bad = json.dumps({"agentId": agent, "description": "ok"}) + "\n" + json.dumps({"agentId": agent})
        p = self.agentz("tasks", "create-batch", "-f", "-", stdin=bad)
        self.assertEqual(p.returncode, 1)
        self.assertIn("INVALID_ARGUMENT: requests[1].task.description", p.stderr)


if __name__ == "__main__":
    unittest.main()
