"""The restore drill: deploy/backup.sh and deploy/restore.sh against the real agentzd with its
embedded PostgreSQL archiving WAL (AGENTZ_WAL_ARCHIVE_DIR).

It creates data over gRPC, takes a base backup, makes more changes (batch A), records a time T,
makes more changes (batch B), waits until batch B's WAL is archived (measuring the RPO), stops the
server, restores to T into a fresh data dir and starts agentzd on it with a fresh, empty embedded
Redis (the "Redis lost too" case). Then it checks over gRPC that exactly the rows committed by T
are there (batch B is not), that the tasks queued before T run to completion (PostgreSQL is the
truth: the reconciler re-publishes them into the empty Redis), that a new task runs, and that the
audit chain verifies; it prints the RTO (restore start to Health SERVING).

    AGENTZD=build/bin/agentzd AGENTZ_TEST_DIR=/tmp/agentz-test \\
        /usr/bin/python3 -m unittest tests/python/test_backup.py -v

The figures it prints are the ones in docs/operations.md ("Disaster recovery plan").
"""

import importlib.util
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest
import uuid

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENTZD = os.environ.get("AGENTZD") or os.path.join(REPO, "build", "bin", "agentzd")
FAKELLM = os.path.join(os.path.dirname(AGENTZD), "agentz-fakellm")
TEST_DIR = os.environ.get("AGENTZ_TEST_DIR") or os.path.join(REPO, "build")
BACKUP_SH = os.path.join(REPO, "deploy", "backup.sh")
RESTORE_SH = os.path.join(REPO, "deploy", "restore.sh")
PSQL = "/usr/lib/postgresql/15/bin/psql"
GRPC_PROTO_DIR = "/usr/share/grpc-proto"
READY_RE = re.compile(r"AGENTZ is running: gRPC at (\S+)")
TIMEOUT = 10.0
ARCHIVE_TIMEOUT_S = 5  # AGENTZ_WAL_ARCHIVE_TIMEOUT of the drill: bounds the RPO
ANSWER = "restored and running"


def _load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Server:
    """One agentzd on a data dir; stderr to a log file, the ready line parsed from stdout."""

    def __init__(self, data_dir, log_path, extra_env, args=()):
        self.log_path = log_path
        drop = ("AGENTZ_DATABASE_URL", "AGENTZ_REDIS_URL", "AGENTZ_LLM_BASE_URL", "AGENTZ_LLM_API_KEY",
                "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AGENTZ_ALLOW_PRIVATE_NETWORKS",
                "AGENTZ_WAL_ARCHIVE_DIR", "AGENTZ_ROLES")
        env = {k: v for k, v in os.environ.items() if k not in drop}
        for k in ("AGENTZ_RATE_LIMIT", "AGENTZ_RATE_LIMIT_WORKSPACE", "AGENTZ_RATE_LIMIT_EXPENSIVE"):
            env[k] = "0"
        env["AGENTZ_METRICS_LISTEN"] = ""
        env.update(extra_env)
        log = open(log_path, "a")
        self.proc = subprocess.Popen([AGENTZD, "--data-dir", data_dir, "--listen", "127.0.0.1:0"] + list(args),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                     env=env, text=True)
        log.close()
        lines = queue.Queue()

        def pump():
            for line in iter(self.proc.stdout.readline, ""):
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        self.address = None
        deadline = time.monotonic() + 60
        while self.address is None:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                line = None
            if line is None:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("agentzd did not become ready; log tail:\n" + self.tail())
            m = READY_RE.search(line)
            if m:
                self.address = m.group(1)
        self.channel = grpc.insecure_channel(self.address)
        grpc.channel_ready_future(self.channel).result(timeout=10)
        with open(os.path.join(data_dir, "admin.key")) as f:
            self.metadata = (("authorization", "Bearer " + f.read().strip()),)

    def tail(self, n=40):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join([l for l in f if 'msg="rpc"' not in l][-n:])
        except OSError:
            return "(no log)"

    def stop(self):
        self.channel.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("agentzd did not stop within 30 s; log tail:\n" + self.tail())
        self.proc.stdout.close()
        if rc != 0:
            raise AssertionError("agentzd exited %d; log tail:\n%s" % (rc, self.tail()))


class Api:
    """Unary calls by method name, with message classes from the server's own reflection."""

    def __init__(self, server, gen_dir):
        self.server = server
        rel = "grpc/reflection/v1/reflection.proto"
        subprocess.run(["protoc", "-I", GRPC_PROTO_DIR, "--python_out=" + gen_dir, rel], check=True)
        pb = _load_module("_az_backup_reflection_v1_pb2",
                          os.path.join(gen_dir, "grpc/reflection/v1/reflection_pb2.py"))
        call = server.channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=pb.ServerReflectionRequest.SerializeToString,
            response_deserializer=pb.ServerReflectionResponse.FromString)
        files = {}
        for sym in ("agentz.v1.AgentService", "agentz.v1.TaskService", "grpc.health.v1.Health"):
            for resp in call(iter([pb.ServerReflectionRequest(file_containing_symbol=sym)]), timeout=TIMEOUT):
                for raw in resp.file_descriptor_response.file_descriptor_proto:
                    fd = descriptor_pb2.FileDescriptorProto()
                    fd.ParseFromString(raw)
                    files.setdefault(fd.name, fd)
        self.pool = descriptor_pool.DescriptorPool()
        added = set()

        def add(name):
            if name in added:
                return
            for dep in files[name].dependency:
                add(dep)
            self.pool.Add(files[name])
            added.add(name)

        for name in list(files):
            add(name)
        self.factory = message_factory.MessageFactory(self.pool)

    def rebind(self, server):
        self.server = server

    def __call__(self, service, method, request):
        sd = self.pool.FindServiceByName(service)
        md = sd.methods_by_name[method]
        req_cls = self.factory.GetPrototype(md.input_type)
        resp_cls = self.factory.GetPrototype(md.output_type)
        call = self.server.channel.unary_unary("/%s/%s" % (sd.full_name, md.name),
                                               request_serializer=req_cls.SerializeToString,
                                               response_deserializer=resp_cls.FromString)
        return call(json_format.ParseDict(request, req_cls()), timeout=TIMEOUT, metadata=self.server.metadata)

    def enum(self, enum_name, value_name):
        return self.pool.FindEnumTypeByName(enum_name).values_by_name[value_name].number


def psql(data_dir, sql):
    """One value from the embedded cluster, as its owner (over the 0700 unix socket)."""
    sock = os.path.join(data_dir, "run")
    rec = os.path.join(sock, "socket_dir")
    if os.path.exists(rec):
        with open(rec) as f:
            sock = f.read().strip()
    out = subprocess.run([PSQL, "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h", sock, "-p", "5432",
                          "-U", "agentz", "-d", "agentz", "-c", sql],
                         capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise AssertionError("psql %r failed: %s" % (sql, out.stderr))
    return out.stdout.strip()


def run_script(args, timeout=120):
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise AssertionError("%s exited %d:\n%s%s" % (os.path.basename(args[0]), out.returncode, out.stdout,
                                                      out.stderr))
    return out.stdout + out.stderr


class T01RestoreDrill(unittest.TestCase):
    def setUp(self):
        for p in (AGENTZD, FAKELLM, BACKUP_SH, RESTORE_SH, PSQL):
            if not os.access(p, os.X_OK):
                self.fail("%s is missing (build first; deploy/install-deps.sh)" % p)
        self.base = os.path.join(TEST_DIR, "python-backup")
        shutil.rmtree(self.base, ignore_errors=True)
        os.makedirs(self.base)
        os.chmod(self.base, 0o755)  # PostgreSQL runs as postgres when we are root
        self.gen = tempfile.mkdtemp(prefix="agentz-pybackup-")
        self.fake = subprocess.Popen([FAKELLM, "--port", "0", "--text", ANSWER], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        line = self.fake.stdout.readline()
        m = re.search(r"(http://\S+)", line)
        self.assertIsNotNone(m, "agentz-fakellm did not start: %r" % line)
        self.llm_url = m.group(1)
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            if s.proc.poll() is None:
                s.proc.kill()
                s.proc.wait()
        self.fake.send_signal(signal.SIGTERM)
        self.fake.wait(timeout=10)
        self.fake.stdout.close()
        shutil.rmtree(self.gen, ignore_errors=True)
        if not os.environ.get("AGENTZ_KEEP_TEST_DATA"):
            shutil.rmtree(self.base, ignore_errors=True)

    def start(self, data_dir, env, args=()):
        s = Server(data_dir, os.path.join(self.base, os.path.basename(data_dir) + "-agentzd.log"), env, args)
        self.servers.append(s)
        return s

    def agent(self, api, name, goal):
        return api("agentz.v1.AgentService", "CreateAgent", {"agent": {
            "name": name, "role": "Drill " + name, "goal": goal, "backstory": "Backup drill.",
            "llm": {"provider": "openai", "model": "drill-model", "baseUrl": self.llm_url}}})

    def task(self, api, agent_id, description):
        return api("agentz.v1.TaskService", "CreateTask", {"task": {
            "description": description, "expectedOutput": "anything", "agentId": agent_id}})

    def list_all(self, api, service, method, field):
        out, token = [], ""
        while True:
            resp = api(service, method, {"pageSize": 1000, "pageToken": token})
            out.extend(getattr(resp, field))
            token = resp.next_page_token
            if not token:
                return out

    def test_point_in_time_restore(self):
        data = os.path.join(self.base, "data")
        backup = os.path.join(self.base, "backup")
        restored = os.path.join(self.base, "restored")
        # Role api only: the tasks stay queued, as work not yet done when the disaster strikes.
        first = self.start(data, {"AGENTZ_WAL_ARCHIVE_DIR": os.path.join(backup, "wal"),
                                  "AGENTZ_WAL_ARCHIVE_TIMEOUT": "%ds" % ARCHIVE_TIMEOUT_S}, ["--roles", "api"])
        api = Api(first, self.gen)
        self.assertEqual(psql(data, "SHOW archive_mode"), "on")

        # Before the base backup.
        a0 = self.agent(api, "before-backup-0", "goal 0")
        a1 = self.agent(api, "before-backup-1", "goal 1")
        t0 = self.task(api, a0.id, "queued before the backup")

        out = run_script([BACKUP_SH, "--data-dir", data, "--to", backup])
        self.assertIn("complete", out)
        bases = os.listdir(os.path.join(backup, "base"))
        self.assertEqual(len(bases), 1, bases)
        for f in ("base.tar.gz", "pg_wal.tar.gz", "backup_manifest", "backup.info", "files/master.key"):
            self.assertTrue(os.path.exists(os.path.join(backup, "base", bases[0], f)), f)

        # Batch A: after the backup, before T.
        a2 = self.agent(api, "batch-a-2", "goal 2")
        t1 = self.task(api, a1.id, "batch A task 1")
        t2 = self.task(api, a2.id, "batch A task 2")
        api("agentz.v1.AgentService", "UpdateAgent", {"agent": {"id": a0.id, "goal": "goal 0 from batch A"},
                                                      "updateMask": "goal"})
        time.sleep(1.0)  # the audit writer has written batch A's entries
        target = psql(data, "SELECT clock_timestamp()")
        audit_at_t = int(psql(data, "SELECT count(*) FROM audit_log"))
        audit_max_at_t = int(psql(data, "SELECT max(id) FROM audit_log"))
        time.sleep(1.0)  # T is strictly between batch A's and batch B's commits

        # Batch B: after T, must not come back.
        a3 = self.agent(api, "batch-b-3", "goal 3")
        t3 = self.task(api, a1.id, "batch B task 3")
        api("agentz.v1.AgentService", "UpdateAgent", {"agent": {"id": a1.id, "goal": "goal 1 from batch B"},
                                                      "updateMask": "goal"})
        api("agentz.v1.AgentService", "DeleteAgent", {"id": a2.id})
        b_commit = time.time()  # batch B's last commit is just before (same host clock)
        b_lsn = psql(data, "SELECT pg_current_wal_lsn()")
        # RPO: how long batch B stays only on the server's own disk before its WAL is archived.
        deadline = time.monotonic() + ARCHIVE_TIMEOUT_S * 4 + 10
        while True:
            archived = psql(data, "SELECT coalesce(extract(epoch FROM last_archived_time), 0),"
                                  " last_archived_wal >= pg_walfile_name('%s') FROM pg_stat_archiver" % b_lsn)
            when, done = archived.split("|")
            if done == "t":
                break
            self.assertLess(time.monotonic(), deadline, "batch B's WAL was not archived: " + archived)
            time.sleep(0.2)
        rpo = float(when) - b_commit
        first.stop()  # the disaster: the server and its disk are gone
        # Archiving sticks to the data dir: a start without the setting (here an admin command,
        # which starts the cluster itself) keeps archive_mode on, so the archive gets no gap.
        with open(os.path.join(data, "wal_archive_dir")) as f:
            self.assertEqual(f.read().strip(), os.path.realpath(os.path.join(backup, "wal")))
        out = subprocess.run([AGENTZD, "admin", "verify-audit", "--data-dir", data], capture_output=True,
                             text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        with open(os.path.join(data, "pg", "postmaster.opts")) as f:
            self.assertIn("archive_mode=on", f.read())

        # Restore to T into a fresh data dir; its embedded Redis starts empty.
        t_start = time.monotonic()
        out = run_script([RESTORE_SH, "--from", backup, "--to", target, "--data-dir", restored])
        self.assertIn("recovered and promoted", out)
        self.assertIn("recovery stopping before commit", out)
        t_restored = time.monotonic()
        self.assertFalse(os.path.exists(os.path.join(restored, "redis")))  # Redis starts from nothing
        second = self.start(restored, {"AGENTZ_REPUBLISH_AFTER": "1s", "AGENTZ_RECONCILE_INTERVAL": "500ms"})
        api.rebind(second)
        serving = api.enum("grpc.health.v1.HealthCheckResponse.ServingStatus", "SERVING")
        while api("grpc.health.v1.Health", "Check", {}).status != serving:
            time.sleep(0.05)
        rto = time.monotonic() - t_start
        recovery = t_restored - t_start
        print("\n  drill: RPO %.1f s (batch B's last commit reached the archive %.1f s later; archive_timeout"
              " %d s bounds it); RTO %.1f s (restore.sh %.1f s, agentzd start to SERVING %.1f s)"
              % (max(rpo, 0), max(rpo, 0), ARCHIVE_TIMEOUT_S, rto, recovery, rto - recovery), flush=True)

        # Exactly the rows of T.
        agents = {a.id: a for a in self.list_all(api, "agentz.v1.AgentService", "ListAgents", "agents")}
        self.assertEqual(set(agents), {a0.id, a1.id, a2.id})
        self.assertEqual(agents[a0.id].goal, "goal 0 from batch A")
        self.assertEqual(agents[a1.id].goal, "goal 1")  # batch B's update is not there
        self.assertNotIn(a3.id, agents)
        tasks = {t.id for t in self.list_all(api, "agentz.v1.TaskService", "ListTasks", "tasks")}
        self.assertEqual(tasks, {t0.id, t1.id, t2.id})
        self.assertNotIn(t3.id, tasks)
        self.assertEqual(int(psql(restored, "SELECT count(*) FROM audit_log WHERE id <= %d" % audit_max_at_t)),
                         audit_at_t)
        self.assertEqual(int(psql(restored, "SELECT count(*) FROM audit_log WHERE target_id IN ('%s', '%s')"
                                            % (a3.id, t3.id))), 0)

        # The queued work of T runs: Redis lost it, PostgreSQL had it, the reconciler re-published.
        succeeded = api.enum("agentz.v1.TaskStatus", "TASK_STATUS_SUCCEEDED")
        terminal = {succeeded, api.enum("agentz.v1.TaskStatus", "TASK_STATUS_FAILED"),
                    api.enum("agentz.v1.TaskStatus", "TASK_STATUS_CANCELLED")}
        t4 = self.task(api, a1.id, "created after the restore")
        deadline = time.monotonic() + 40
        for t in (t0, t1, t2, t4):
            while True:
                got = api("agentz.v1.TaskService", "GetTask", {"id": t.id})
                if got.status in terminal or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            self.assertEqual(got.status, succeeded, "%s\n%s" % (got, second.tail(20)))
            self.assertEqual(got.output.raw, ANSWER)

        # The audit chain of the restored cluster verifies.
        out = subprocess.run([AGENTZD, "admin", "verify-audit", "--data-dir", restored], capture_output=True,
                             text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn("audit log intact", out.stdout)
        second.stop()


if __name__ == "__main__":
    unittest.main()
