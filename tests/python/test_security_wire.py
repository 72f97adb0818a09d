"""Security checks over the wire against the real agentzd, filling what the C suites
(test_jwt, test_auth, test_authz_matrix, test_rls, test_isolation) leave out:

- session tokens through a JWKS served over real HTTP: a valid RS256 token is accepted; expired,
  forged (another key, same kid), alg=none, HS256 keyed with the public key, another issuer and a
  tampered payload are refused with UNAUTHENTICATED, and no error or log line repeats the token;
- a second workspace (a session token's personal workspace) cannot watch, read or clear another
  workspace's runs, tasks, agent memory and metrics, and sees none of its agent events;
- a provider key stored as a secret reaches the provider and never appears in a task's error
  (even when the provider echoes it back), its events, or the log;
- rate limits hold under concurrent clients: eight threads sharing one key get no more than the
  bucket allows, and two keys get a bucket each.

    AGENTZD=build/bin/agentzd AGENTZ_TEST_DIR=/tmp/agentz-test \
        /usr/bin/python3 -m unittest tests/python/test_security_wire.py -v
"""

import base64
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
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import azproc  # noqa: E402  (the sibling module, however this file is run)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENTZD = os.environ.get("AGENTZD") or os.path.join(REPO, "build", "bin", "agentzd")
TEST_DIR = os.environ.get("AGENTZ_TEST_DIR") or os.path.join(REPO, "build")
GRPC_PROTO_DIR = "/usr/share/grpc-proto"
READY_RE = re.compile(r"AGENTZ is running: gRPC at (\S+)")
ISSUER = "https://chaos.clerk.test"
TIMEOUT = 10.0
RATE, BURST = 10, 20  # AGENTZ_RATE_LIMIT for the rate-limit round

DATA_DIR = os.path.join(TEST_DIR, "python-security")
LOG_PATH = os.path.join(TEST_DIR, "python-security-agentzd.log")
KEY1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KEY2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PROVIDER_KEY = "sk-wire-" + uuid.uuid4().hex
SERVER = None
CHANNEL = None
ADDRESS = None
ADMIN = ()
POOL = None
FACTORY = None
JWKS = None
FAKE = None
TOKENS_SENT = []


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def int_b64u(n):
    return b64u(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def token(claims=None, header=None, key=KEY1, alg="RS256", sign=True):
    now = int(time.time())
    c = {"iss": ISSUER, "sub": "user_wire", "iat": now - 5, "nbf": now - 5, "exp": now + 600}
    c.update(claims or {})
    h = {"alg": alg, "typ": "JWT", "kid": "k1"}
    h.update(header or {})
    signing = (b64u(json.dumps(h).encode()) + "." + b64u(json.dumps(c).encode())).encode()
    if not sign:
        sig = b""
    elif alg == "HS256":  # the classic confusion: the public key as an HMAC secret
        pem = KEY1.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
        m = hmac.HMAC(pem, hashes.SHA256())
        m.update(signing)
        sig = m.finalize()
    else:
        sig = key.sign(signing, padding.PKCS1v15(), hashes.SHA256())
    t = signing.decode() + "." + b64u(sig)
    TOKENS_SENT.append(t)
    return t


class _Jwks(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        pub = KEY1.public_key().public_numbers()
        body = json.dumps({"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "k1",
                                     "n": int_b64u(pub.n), "e": int_b64u(pub.e)}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Provider(http.server.BaseHTTPRequestHandler):
    """Answers every chat completion 401 and echoes the Authorization header it got, as a
    careless provider might: the server must not pass the key on into errors."""
    protocol_version = "HTTP/1.0"

    def log_message(self, *a):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        got = self.headers.get("Authorization") or ""
        self.server.auth.append(got)
        body = json.dumps({"error": {"message": "Incorrect API key provided: %s" % got,
                                     "type": "invalid_request_error", "code": "invalid_api_key"}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(handler):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    httpd.auth = []
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def _load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def reflect(channel, symbols):
    gen = tempfile.mkdtemp(prefix="agentz-pysec-")
    try:
        rel = "grpc/reflection/v1/reflection.proto"
        subprocess.run(["protoc", "-I", GRPC_PROTO_DIR, "--python_out=" + gen, rel], check=True)
        pb = _load_module("_az_sec_reflection_v1_pb2", os.path.join(gen, "grpc/reflection/v1/reflection_pb2.py"))
    finally:
        shutil.rmtree(gen, ignore_errors=True)
    call = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                 request_serializer=pb.ServerReflectionRequest.SerializeToString,
                                 response_deserializer=pb.ServerReflectionResponse.FromString)
    files = {}
    for sym in symbols:
        for resp in call(iter([pb.ServerReflectionRequest(file_containing_symbol=sym)]), timeout=TIMEOUT):
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


def start(extra_env):
    global SERVER, CHANNEL, ADDRESS, ADMIN
    os.makedirs(DATA_DIR, exist_ok=True)
    drop = ("AGENTZ_DATABASE_URL", "AGENTZ_REDIS_URL", "AGENTZ_LLM_BASE_URL", "AGENTZ_LLM_API_KEY",
            "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AGENTZ_JWKS_URL", "AGENTZ_JWT_ISSUER")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update({"AGENTZ_RATE_LIMIT": "0", "AGENTZ_RATE_LIMIT_WORKSPACE": "0", "AGENTZ_RATE_LIMIT_EXPENSIVE": "0",
                "AGENTZ_STREAM_HEARTBEAT": "1s", "AGENTZ_RECONCILE_INTERVAL_MS": "300"})
    env.update(extra_env)
    try:
        SERVER, ADDRESS = azproc.start([AGENTZD, "--data-dir", DATA_DIR, "--listen", "127.0.0.1:0"], env, LOG_PATH, append=True)
    except RuntimeError as e:
        raise RuntimeError("%s; %s" % (e, "see " + LOG_PATH))
    CHANNEL = grpc.insecure_channel(ADDRESS)
    with open(os.path.join(DATA_DIR, "admin.key")) as f:
        ADMIN = (("authorization", "Bearer " + f.read().strip()),)


def stop():
    global SERVER
    if CHANNEL is not None:
        CHANNEL.close()
    if SERVER is None:
        return
    proc, SERVER = SERVER, None
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("agentzd did not stop within 30 s of SIGTERM")
    proc.stdout.close()
    if rc != 0:
        raise AssertionError("agentzd exited %d; see %s" % (rc, LOG_PATH))


def setUpModule():
    global POOL, FACTORY, JWKS, FAKE
    if not os.access(AGENTZD, os.X_OK):
        raise RuntimeError("agentzd not found at %s (set AGENTZD)" % AGENTZD)
    if os.path.exists(LOG_PATH):
        os.unlink(LOG_PATH)
    JWKS = serve(_Jwks)
    FAKE = serve(_Provider)
    start({"AGENTZ_JWKS_URL": "http://127.0.0.1:%d/.well-known/jwks.json" % JWKS.server_address[1],
           "AGENTZ_JWT_ISSUER": ISSUER})
    POOL = reflect(CHANNEL, ["agentz.v1.AgentService", "agentz.v1.TaskService", "agentz.v1.WorkflowService",
                             "agentz.v1.SystemService"])
    FACTORY = message_factory.MessageFactory(POOL)


def tearDownModule():
    try:
        stop()
    finally:
        for s in (JWKS, FAKE):
            if s:
                s.shutdown()
                s.server_close()


def _method(service, method):
    sd = POOL.FindServiceByName(service)
    md = sd.methods_by_name[method]
    return ("/%s/%s" % (sd.full_name, md.name), FACTORY.GetPrototype(md.input_type),
            FACTORY.GetPrototype(md.output_type))


def rpc(service, method, req, md, timeout=TIMEOUT):
    path, rq, rs = _method(service, method)
    call = CHANNEL.unary_unary(path, request_serializer=rq.SerializeToString, response_deserializer=rs.FromString)
    return call(json_format.ParseDict(req, rq()), timeout=timeout, metadata=md)


def watch(service, method, req, md, timeout=TIMEOUT):
    path, rq, rs = _method(service, method)
    call = CHANNEL.unary_stream(path, request_serializer=rq.SerializeToString, response_deserializer=rs.FromString)
    return call(json_format.ParseDict(req, rq()), timeout=timeout, metadata=md)


def bearer(t):
    return (("authorization", "Bearer " + t),)


def code_of(fn):
    try:
        fn()
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details() or ""


class T01SessionTokens(unittest.TestCase):
    def whoami(self, t):
        return rpc("agentz.v1.SystemService", "WhoAmI", {}, bearer(t))

    def test_valid_token_accepted(self):
        who = self.whoami(token())
        self.assertEqual(who.principal, "user:user_wire")

    def test_bad_tokens_refused(self):
        now = int(time.time())
        good = token()
        head, payload, sig = good.split(".")
        tampered_claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
        tampered_claims["sub"] = "user_admin"
        tampered = head + "." + b64u(json.dumps(tampered_claims).encode()) + "." + sig
        TOKENS_SENT.append(tampered)
        cases = {
            "expired": token({"exp": now - 300, "iat": now - 900, "nbf": now - 900}),
            "not yet valid": token({"nbf": now + 600}),
            "forged (another key, same kid)": token(key=KEY2),
            "alg none, no signature": token(alg="none", sign=False),
            "alg none with the good signature": b64u(json.dumps(
                {"alg": "none", "typ": "JWT", "kid": "k1"}).encode()) + "." + payload + "." + sig,
            "HS256 keyed with the public key": token(alg="HS256"),
            "another issuer": token({"iss": "https://evil.example"}),
            "tampered payload": tampered,
            "unknown kid": token(header={"kid": "k9"}),
            "no sub": token({"sub": ""}),
        }
        TOKENS_SENT.append(cases["alg none with the good signature"])
        for what, t in cases.items():
            code, details = code_of(lambda: self.whoami(t))
            self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED, "%s: %s %s" % (what, code, details))
            for part in t.split(".")[1:]:
                if len(part) > 8:
                    self.assertNotIn(part, details, "%s: the error repeats the token" % what)


class T02CrossWorkspace(unittest.TestCase):
    """Workspace A is the admin key's; B is a session token's personal workspace."""

    def test_b_cannot_reach_a(self):
        b = bearer(token({"sub": "user_other_" + uuid.uuid4().hex[:6]}))
        who = rpc("agentz.v1.SystemService", "WhoAmI", {}, b)
        mine = rpc("agentz.v1.SystemService", "WhoAmI", {}, ADMIN)
        self.assertNotEqual(who.workspace_id, mine.workspace_id)
        # B watches its workspace's agents before A changes anything
        agents_b = watch("agentz.v1.AgentService", "WatchAgents", {}, b, timeout=6)
        seen_b = []
        reader = threading.Thread(target=lambda: [seen_b.append(e) for e in _drain(agents_b)], daemon=True)
        reader.start()
        agent = rpc("agentz.v1.AgentService", "CreateAgent", {"agent": {
            "role": "Wire Agent", "goal": "g", "backstory": "b",
            "llm": {"provider": "openai", "model": "wire", "baseUrl": "http://127.0.0.1:%d/v1" % FAKE.server_address[1]}}},
            ADMIN)
        task = rpc("agentz.v1.TaskService", "CreateTask", {"task": {
            "description": "d", "expectedOutput": "e", "agentId": agent.id,
            "retryPolicy": {"maxAttempts": 1}}}, ADMIN)
        wf = rpc("agentz.v1.WorkflowService", "CreateWorkflow", {"workflow": {
            "name": "wire-" + uuid.uuid4().hex[:8], "process": "PROCESS_SEQUENTIAL",
            "steps": [{"id": "s1", "agentId": agent.id, "description": "d", "expectedOutput": "e",
                       "retryPolicy": {"maxAttempts": 1}}]}}, ADMIN)
        run = rpc("agentz.v1.WorkflowService", "StartRun", {"workflowId": wf.id}, ADMIN)
        refused = {
            "WatchRun": lambda: list(watch("agentz.v1.WorkflowService", "WatchRun", {"runId": run.id}, b)),
            "WatchTask": lambda: list(watch("agentz.v1.TaskService", "WatchTask", {"taskId": task.id}, b)),
            "GetAgentMemory": lambda: rpc("agentz.v1.AgentService", "GetAgentMemory", {"agentId": agent.id}, b),
            "ClearAgentMemory": lambda: rpc("agentz.v1.AgentService", "ClearAgentMemory", {"agentId": agent.id}, b),
            "GetAgentMetrics": lambda: rpc("agentz.v1.AgentService", "GetAgentMetrics", {"agentId": agent.id}, b),
            "GetRun": lambda: rpc("agentz.v1.WorkflowService", "GetRun", {"id": run.id}, b),
            "ResumeRun": lambda: rpc("agentz.v1.WorkflowService", "ResumeRun", {"id": run.id}, b),
            "GetWorkflowAnalytics": lambda: rpc("agentz.v1.WorkflowService", "GetWorkflowAnalytics",
                                                {"workflowId": wf.id}, b),
        }
        for name, fn in refused.items():
            code, details = code_of(fn)
            self.assertIn(code, (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT),
                          "%s of another workspace: %s %s" % (name, code, details))
            self.assertNotEqual(code, grpc.StatusCode.PERMISSION_DENIED, name)
        stats = rpc("agentz.v1.TaskService", "GetTaskStats", {}, b)
        self.assertNotIn(agent.id, str(stats))
        # A's own view still works, and B saw none of A's agent events
        self.assertEqual(rpc("agentz.v1.AgentService", "GetAgent", {"id": agent.id}, ADMIN).id, agent.id)
        reader.join(10)
        leaked = [e for e in seen_b if agent.id in str(e) or task.id in str(e) or run.id in str(e)]
        self.assertEqual(leaked, [], "B's WatchAgents carried A's events")


def _drain(call):
    try:
        for e in call:
            yield e
    except grpc.RpcError:
        return


class T03SecretsStaySecret(unittest.TestCase):
    def test_provider_key_never_echoed(self):
        name = "wire-key-" + uuid.uuid4().hex[:6]
        rpc("agentz.v1.SystemService", "CreateSecret", {"name": name, "value": PROVIDER_KEY}, ADMIN)
        # a refused CreateSecret does not repeat the value it was given
        code, details = code_of(lambda: rpc("agentz.v1.SystemService", "CreateSecret",
                                            {"name": "not a valid name!", "value": PROVIDER_KEY}, ADMIN))
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, details)
        self.assertNotIn(PROVIDER_KEY, details)
        listed = rpc("agentz.v1.SystemService", "ListSecrets", {}, ADMIN)
        self.assertNotIn(PROVIDER_KEY, str(listed))
        agent = rpc("agentz.v1.AgentService", "CreateAgent", {"agent": {
            "role": "Keyed Agent", "goal": "g", "backstory": "b",
            "llm": {"provider": "openai", "model": "keyed", "apiKeySecret": name,
                    "baseUrl": "http://127.0.0.1:%d/v1" % FAKE.server_address[1]}}}, ADMIN)
        self.assertNotIn(PROVIDER_KEY, str(agent))
        task = rpc("agentz.v1.TaskService", "CreateTask", {"task": {
            "description": "d", "expectedOutput": "e", "agentId": agent.id,
            "retryPolicy": {"maxAttempts": 1}}}, ADMIN)
        events = list(watch("agentz.v1.TaskService", "WatchTask", {"taskId": task.id, "includeTokens": True},
                            ADMIN, timeout=30))
        got = rpc("agentz.v1.TaskService", "GetTask", {"id": task.id}, ADMIN)
        self.assertEqual(got.status, POOL.FindEnumTypeByName("agentz.v1.TaskStatus")
                         .values_by_name["TASK_STATUS_FAILED"].number, str(got))
        self.assertIn("Bearer " + PROVIDER_KEY, FAKE.auth, "the stored key did not reach the provider")
        self.assertTrue(got.error.message, "a failed task carries its reason")
        self.assertNotIn(PROVIDER_KEY, str(got), "the task's error repeats the provider key")
        attempts = rpc("agentz.v1.TaskService", "ListTaskAttempts", {"taskId": task.id}, ADMIN)
        self.assertNotIn(PROVIDER_KEY, str(attempts))
        for e in events:
            self.assertNotIn(PROVIDER_KEY.encode(), e.SerializeToString())

    def test_zz_log_has_no_secret(self):
        time.sleep(0.5)
        with open(LOG_PATH, "rb") as f:
            data = f.read()
        with open(os.path.join(DATA_DIR, "admin.key"), "rb") as f:
            admin = f.read().strip()
        self.assertNotIn(PROVIDER_KEY.encode(), data)
        self.assertNotIn(admin, data)
        for t in TOKENS_SENT:
            sig = t.split(".")[-1]
            if len(sig) > 16:
                self.assertNotIn(sig.encode(), data, "a token's signature is in the log")


class T04RateLimitUnderConcurrency(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        stop()
        start({"AGENTZ_RATE_LIMIT": "%d:%d" % (RATE, BURST)})

    def hammer(self, keys, seconds=2.0, threads=8):
        counts = {"key%d" % i: {"ok": 0, "exhausted": 0, "other": 0} for i in range(len(keys))}
        lock = threading.Lock()
        end = time.monotonic() + seconds

        def run(i):
            k, name = keys[i % len(keys)], "key%d" % (i % len(keys))
            call = CHANNEL.unary_unary("/agentz.v1.SystemService/WhoAmI", request_serializer=lambda b: b,
                                       response_deserializer=lambda b: b)
            while time.monotonic() < end:
                try:
                    call(b"", timeout=5, metadata=bearer(k))
                    r = "ok"
                except grpc.RpcError as e:
                    r = "exhausted" if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED else "other"
                with lock:
                    counts[name][r] += 1

        t0 = time.monotonic()
        ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return counts, time.monotonic() - t0

    def test_bucket_holds(self):
        admin = ADMIN[0][1].split(" ", 1)[1]
        r = subprocess.run([AGENTZD, "admin", "create-key", "--role", "viewer", "--name", "wire-2",
                            "--data-dir", DATA_DIR], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        second = r.stdout.strip().split()[-1]
        time.sleep(BURST / RATE + 0.5)  # both buckets full
        counts, took = self.hammer([admin, second])
        allowed = BURST + RATE * took
        print("\n  %d threads for %.1f s, bucket %d/s burst %d: %s" % (8, took, RATE, BURST, counts))
        for k, c in counts.items():
            self.assertEqual(c["other"], 0, c)
            self.assertGreater(c["exhausted"], 0, "the limit never bit: %s" % c)
            self.assertGreaterEqual(c["ok"], BURST * 0.9, "a key got less than its burst: %s" % c)
            self.assertLessEqual(c["ok"], allowed * 1.1 + 2, "a key got more than its bucket: %s" % c)


if __name__ == "__main__":
    unittest.main()
