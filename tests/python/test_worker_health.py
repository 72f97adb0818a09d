"""A worker that cannot read the task queue says so in grpc.health.v1: agentzd (api and worker,
embedded PostgreSQL and Redis) is SERVING; then Redis refuses new connections (maxclients) and
the worker's queue-reading connection is killed, so the worker cannot reconnect while Redis
itself, and the daemon's command connection, stay up. Health must turn NOT_SERVING within a few
seconds, say why in the log, and turn SERVING again once Redis accepts connections, with a
connection reading the queue again. The event hub's subscription is cut the same way: neither
it nor the worker may call a refused connection "reconnected" or retry it without backoff. Before, health only pinged Redis and PostgreSQL, so such a worker said
SERVING while it took no task (docs/reliability.md, finding 2).

    AGENTZD=build/bin/agentzd AGENTZ_TEST_DIR=/tmp/agentz-test \\
        /usr/bin/python3 -m unittest tests/python/test_worker_health.py -v
"""

import os
import re
import socket
import sys
import time
import unittest

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import azproc  # noqa: E402  (the sibling module, however this file is run)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENTZD = os.environ.get("AGENTZD") or os.path.join(REPO, "build", "bin", "agentzd")
TEST_DIR = os.environ.get("AGENTZ_TEST_DIR") or os.path.join(REPO, "build")
SERVING, NOT_SERVING = 1, 2


class Resp:
    """One RESP connection to Redis on a unix socket (a client of our own would need a slot)."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(5)
        self.s.connect(path)
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b":"):
            return rest.decode()
        if kind == b"-":
            raise RuntimeError("redis: " + rest.decode())
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.s.recv(65536)
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data.decode()
        if kind == b"*":
            return [self._reply() for _ in range(int(rest))]
        raise RuntimeError("unexpected redis reply %r" % line)

    def call(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.s.sendall(out)
        return self._reply()

    def close(self):
        self.s.close()


def health(channel):
    """Health/Check of the whole server: the ServingStatus (field 1 of the response)."""
    check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                request_serializer=lambda b: b, response_deserializer=lambda b: b)
    body = check(b"", timeout=5)
    return body[1] if len(body) >= 2 and body[0] == 0x08 else 0


class T01WorkerQueueHealth(unittest.TestCase):
    def setUp(self):
        if not os.access(AGENTZD, os.X_OK):
            self.fail("agentzd not found at %s (set AGENTZD)" % AGENTZD)
        self.data = os.path.join(TEST_DIR, "python-worker-health")
        os.makedirs(self.data, exist_ok=True)
        os.chmod(TEST_DIR, 0o755)
        self.log_path = os.path.join(TEST_DIR, "python-worker-health-agentzd.log")
        drop = ("AGENTZ_DATABASE_URL", "AGENTZ_REDIS_URL")
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env["AGENTZ_RATE_LIMIT"] = "0"
        try:
            self.proc, address = azproc.start(
                [AGENTZD, "--data-dir", self.data, "--listen", "127.0.0.1:0", "--roles",
                 "api,worker", "--health-interval", "200ms", "--metrics-listen", ""],
                env, self.log_path)
        except RuntimeError as e:
            self.fail("%s; log tail:\n%s" % (e, self.log_tail()))
        self.channel = grpc.insecure_channel(address)
        sockdir = os.path.join(self.data, "run")
        try:
            with open(os.path.join(self.data, "run", "socket_dir")) as f:
                sockdir = f.read().strip() or sockdir
        except OSError:
            pass
        self.redis = Resp(os.path.join(sockdir, "redis.sock"))

    def tearDown(self):
        try:
            self.redis.call("CONFIG", "SET", "maxclients", "10000")
        except Exception:
            pass
        self.redis.close()
        self.channel.close()
        rc = azproc.stop(self.proc)
        self.assertIsNotNone(rc, "agentzd did not stop within 30 s of SIGTERM")
        self.assertEqual(rc, 0, "agentzd exited %d after SIGTERM; log tail:\n%s" % (rc, self.log_tail()))

    def log_tail(self, n=40):
        with open(self.log_path, errors="replace") as f:
            return "".join([l for l in f if 'msg="rpc"' not in l][-n:])

    def wait_health(self, want, seconds):
        deadline, got = time.monotonic() + seconds, None
        while time.monotonic() < deadline:
            got = health(self.channel)
            if got == want:
                return time.monotonic()
            time.sleep(0.1)
        self.fail("health stayed %s, not %s, for %.0f s; log tail:\n%s"
                  % (got, want, seconds, self.log_tail()))

    def test_unreadable_queue_is_not_serving(self):
        self.wait_health(SERVING, 30)
        clients = self.redis.call("CLIENT", "LIST")
        readers = [l for l in clients.splitlines() if "cmd=xreadgroup" in l]
        self.assertTrue(readers, "no connection blocked in XREADGROUP:\n" + clients)
        # Existing connections stay; every new one is refused.
        self.redis.call("CONFIG", "SET", "maxclients", "1")
        with open(self.log_path, errors="replace") as f:
            log_before = len(f.read())
        t0 = time.monotonic()
        for line in readers:
            cid = re.search(r"\bid=(\d+)", line).group(1)
            self.redis.call("CLIENT", "KILL", "ID", cid)
        # The event hub's subscription too: it must back off the same way.
        self.redis.call("CLIENT", "KILL", "TYPE", "pubsub")
        t_down = self.wait_health(NOT_SERVING, 10)
        # The grace is 1 s and checks run every 200 ms: well within 5 s.
        self.assertLess(t_down - t0, 5.0)
        # Redis itself answers: it is the worker's queue that is down, and the log says so.
        self.assertEqual(self.redis.call("PING"), "PONG")
        deadline = time.monotonic() + 5
        while "cannot read the task queue" not in self.log_tail(400):
            if time.monotonic() > deadline:
                self.fail("the log does not say why health failed:\n" + self.log_tail())
            time.sleep(0.1)
        # Still NOT_SERVING a while later: the worker cannot get back in.
        time.sleep(1.5)
        self.assertEqual(health(self.channel), NOT_SERVING)
        # A connect the server accepts and then refuses is no reconnect: no "reconnected" line,
        # and the backoff grows (at 100 ms a try there would be dozens of "lost" lines).
        with open(self.log_path, errors="replace") as f:
            outage = [l for l in f.read()[log_before:].splitlines() if 'msg="rpc"' not in l]
        self.assertFalse([l for l in outage if "reconnected to redis" in l],
                         "a refused client was logged as reconnected:\n" + "\n".join(outage[-20:]))
        lost = [l for l in outage if "lost redis" in l]
        self.assertTrue(any("worker lost redis" in l for l in lost), "\n".join(outage[-20:]))
        self.assertTrue(any("event hub lost redis" in l for l in lost), "\n".join(outage[-20:]))
        self.assertLessEqual(len(lost), 4, "\n".join(lost))
        tries = int(self.redis.call("INFO", "stats").split("rejected_connections:")[1].split()[0])
        # Two worker connections and the hub over ~3 s: 100, 200, 400, 800, 1600 ms apart.
        self.assertLessEqual(tries, 20, "%d connections refused in ~3 s: no backoff" % tries)
        self.redis.call("CONFIG", "SET", "maxclients", "10000")
        # The reconnect backoff is at most 5 s.
        t_up = self.wait_health(SERVING, 15)
        self.assertGreater(t_up, t_down)
        deadline = time.monotonic() + 10
        while True:
            clients = self.redis.call("CLIENT", "LIST")
            if "cmd=xreadgroup" in clients:
                break
            if time.monotonic() > deadline:
                self.fail("health is SERVING but no worker connection reads the queue:\n" + clients)
            time.sleep(0.1)
        deadline = time.monotonic() + 10
        while "event hub reconnected to redis" not in self.log_tail(400):
            if time.monotonic() > deadline:
                self.fail("the event hub did not resubscribe:\n" + self.log_tail())
            time.sleep(0.1)


if __name__ == "__main__":
    unittest.main()
