"""Bad input at the protocol level, straight over a TCP socket to agentzd's gRPC port: malformed
gRPC messages on valid HTTP/2 streams (a length prefix longer than the data, the compressed flag
without an encoding, a truncated protobuf, a message over AGENTZ_MAX_MESSAGE_BYTES) and HTTP/2
abuse (rapid reset, oversized headers, a SETTINGS flood, a PING flood, garbage after the preface,
garbage instead of it). Each abusive connection must be answered or closed within a few seconds,
and after each the server must still be up and serve a well-behaved client at once.

    AGENTZD=build/bin/agentzd AGENTZ_TEST_DIR=/tmp/agentz-test \
        /usr/bin/python3 -m unittest tests/python/test_protocol_abuse.py -v

HTTP/2 frames and HPACK (literal fields, no Huffman) are built here with struct: RFC 9113 and
RFC 7541 are small enough, and a library would refuse to send most of these.
"""

import os
import queue
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import azproc  # noqa: E402  (the sibling module, however this file is run)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENTZD = os.environ.get("AGENTZD") or os.path.join(REPO, "build", "bin", "agentzd")
TEST_DIR = os.environ.get("AGENTZ_TEST_DIR") or os.path.join(REPO, "build")
READY_RE = re.compile(r"AGENTZ is running: gRPC at (\S+)")
MAX_MESSAGE = 1 << 20  # AGENTZ_MAX_MESSAGE_BYTES for this server
ANSWER_S = 5.0         # an abusive stream is answered or its connection closed within this

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, END_HEADERS = 0x1, 0x4

SERVER = None
ADDRESS = None
LOG_PATH = None
METADATA = ()


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def hpack_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack(headers):
    """Literal header fields without indexing, new names, no Huffman (RFC 7541 6.2.2)."""
    out = b""
    for k, v in headers:
        k, v = k.encode(), v.encode()
        out += b"\x00" + hpack_int(len(k), 7) + k + hpack_int(len(v), 7) + v
    return out


def grpc_headers(path, extra=()):
    host, port = ADDRESS.rsplit(":", 1)
    return hpack([(":method", "POST"), (":scheme", "http"), (":path", path),
                  (":authority", ADDRESS), ("content-type", "application/grpc"), ("te", "trailers")]
                 + list(METADATA) + list(extra))


class H2:
    """One raw HTTP/2 connection: preface and empty SETTINGS sent, frames read on a thread."""

    def __init__(self, preface=True):
        host, port = ADDRESS.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.frames = queue.Queue()
        self.closed = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if preface:
            self.send(PREFACE + frame(SETTINGS, 0, 0))

    def send(self, data):
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def _read(self):
        buf = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while len(buf) >= 9:
                    n = struct.unpack(">I", b"\x00" + buf[:3])[0]
                    if len(buf) < 9 + n:
                        break
                    ftype, flags = buf[3], buf[4]
                    sid = struct.unpack(">I", buf[5:9])[0] & 0x7FFFFFFF
                    payload = buf[9:9 + n]
                    buf = buf[9 + n:]
                    if ftype == SETTINGS and not flags & 1:
                        self.send(frame(SETTINGS, 1, 0))
                    self.frames.put((ftype, flags, sid, payload))
        except OSError:
            pass
        self.closed.set()
        self.frames.put(None)

    def outcome(self, stream, timeout=ANSWER_S):
        """How stream ended: 'grpc-status N' (from its trailers), 'rst', 'goaway', 'closed', or
        None when nothing came within timeout."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                f = self.frames.get(timeout=max(end - time.monotonic(), 0.01))
            except queue.Empty:
                break
            if f is None:
                return "closed"
            ftype, flags, sid, payload = f
            if ftype == GOAWAY:
                return "goaway"
            if sid != stream:
                continue
            if ftype == RST_STREAM:
                return "rst"
            if ftype == HEADERS and flags & END_STREAM:
                m = re.search(rb"grpc-status.(\d+)", payload)
                # trailers are HPACK-encoded; agentzd's are literal or indexed: report raw
                return "grpc-status %s" % (m.group(1).decode() if m else "?")
        return None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def start_server():
    global SERVER, ADDRESS, LOG_PATH, METADATA
    data_dir = os.path.join(TEST_DIR, "python-abuse")
    os.makedirs(data_dir, exist_ok=True)
    LOG_PATH = os.path.join(TEST_DIR, "python-abuse-agentzd.log")
    env = {k: v for k, v in os.environ.items() if k not in ("AGENTZ_DATABASE_URL", "AGENTZ_REDIS_URL")}
    env["AGENTZ_MAX_MESSAGE_BYTES"] = str(MAX_MESSAGE)
    for k in ("AGENTZ_RATE_LIMIT", "AGENTZ_RATE_LIMIT_WORKSPACE", "AGENTZ_RATE_LIMIT_EXPENSIVE"):
        env.setdefault(k, "0")
    try:
        SERVER, ADDRESS = azproc.start([AGENTZD, "--data-dir", data_dir, "--listen", "127.0.0.1:0", "--roles", "api"], env, LOG_PATH)
    except RuntimeError as e:
        raise RuntimeError("%s; %s" % (e, "see " + LOG_PATH))
    with open(os.path.join(data_dir, "admin.key")) as f:
        METADATA = (("authorization", "Bearer " + f.read().strip()),)


def setUpModule():
    if not os.access(AGENTZD, os.X_OK):
        raise RuntimeError("agentzd not found at %s (set AGENTZD)" % AGENTZD)
    start_server()


def tearDownModule():
    if SERVER is None:
        return
    SERVER.send_signal(signal.SIGTERM)
    try:
        rc = SERVER.wait(timeout=30)
    except subprocess.TimeoutExpired:
        SERVER.kill()
        SERVER.wait()
        raise AssertionError("agentzd did not stop within 30 s of SIGTERM")
    SERVER.stdout.close()
    if rc != 0:
        raise AssertionError("agentzd exited %d after SIGTERM; see %s" % (rc, LOG_PATH))


def serves():
    """A well-behaved client gets answers: health SERVING and an authenticated ListAgents."""
    with grpc.insecure_channel(ADDRESS) as ch:
        check = ch.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                               response_deserializer=lambda b: b)
        lst = ch.unary_unary("/agentz.v1.AgentService/ListAgents", request_serializer=lambda b: b,
                             response_deserializer=lambda b: b)
        return check(b"", timeout=5) == b"\x08\x01" and lst(b"", timeout=5, metadata=METADATA) is not None


def grpc_msg(body, compressed=0, length=None):
    return bytes([compressed]) + struct.pack(">I", len(body) if length is None else length) + body


class Base(unittest.TestCase):
    def assert_still_serving(self):
        self.assertIsNone(SERVER.poll(), "agentzd died; see %s" % LOG_PATH)
        t0 = time.monotonic()
        self.assertTrue(serves())
        self.assertLess(time.monotonic() - t0, 3.0, "a good client waited")

    def stream_outcome(self, path, data_frames, extra=()):
        c = H2()
        try:
            c.send(frame(HEADERS, END_HEADERS, 1, grpc_headers(path, extra)))
            for i, (payload, last) in enumerate(data_frames):
                c.send(frame(DATA, END_STREAM if last else 0, 1, payload))
            return c.outcome(1)
        finally:
            c.close()


class T01MalformedGrpc(Base):
    HEALTH = "/grpc.health.v1.Health/Check"

    def test_length_prefix_longer_than_the_data(self):
        got = self.stream_outcome(self.HEALTH, [(grpc_msg(b"\x0a\x00", length=1000), True)])
        self.assertIsNotNone(got, "no answer to a message shorter than its length prefix")
        self.assertNotEqual(got, "grpc-status 0", got)
        self.assert_still_serving()

    def test_compressed_flag_without_encoding(self):
        # gRPC core 1.51 reads the flag without an encoding as identity (the spec says INTERNAL):
        # harmless; what matters is an answer, and the server unharmed
        got = self.stream_outcome(self.HEALTH, [(grpc_msg(b"\x0a\x00", compressed=1), True)])
        self.assertIsNotNone(got, "no answer to a compressed message without an encoding")
        # the same with a declared encoding and bytes that do not inflate: refused
        got = self.stream_outcome(self.HEALTH, [(grpc_msg(b"not gzip at all", compressed=1), True)],
                                  extra=[("grpc-encoding", "gzip")])
        self.assertIsNotNone(got)
        self.assertNotEqual(got, "grpc-status 0", got)
        self.assert_still_serving()

    def test_truncated_protobuf(self):
        # field 1 (service, a string) says 50 bytes and has 3
        got = self.stream_outcome(self.HEALTH, [(grpc_msg(b"\x0a\x32abc"), True)])
        self.assertIsNotNone(got)
        self.assertNotEqual(got, "grpc-status 0", got)
        self.assert_still_serving()

    def test_oversized_message(self):
        # a real client sending a message over the limit is refused with RESOURCE_EXHAUSTED
        with grpc.insecure_channel(ADDRESS, options=[("grpc.max_send_message_length", -1)]) as ch:
            create = ch.unary_unary("/agentz.v1.AgentService/CreateAgent",
                                    request_serializer=lambda b: b, response_deserializer=lambda b: b)
            with self.assertRaises(grpc.RpcError) as cm:
                create(b"\x0a" + b"r" * (MAX_MESSAGE + 4096), timeout=10, metadata=METADATA)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, cm.exception.details())
        # a raw stream announcing more than the limit and then stalling inside the flow-control
        # window is held only to its deadline (grpc-timeout), not forever
        size = MAX_MESSAGE + 4096
        frames = [(grpc_msg(b"", length=size) + b"\x00" * 16000, False)] + [(b"\x00" * 16000, False)] * 2
        t0 = time.monotonic()
        got = self.stream_outcome("/agentz.v1.AgentService/CreateAgent", frames, extra=[("grpc-timeout", "2S")])
        self.assertIsNotNone(got, "a stalled oversized message outlived its deadline")
        self.assertNotEqual(got, "grpc-status 0", got)
        self.assertLess(time.monotonic() - t0, ANSWER_S)
        self.assert_still_serving()

    def test_data_after_end_stream_and_on_unopened_streams(self):
        c = H2()
        try:
            c.send(frame(DATA, 0, 7, grpc_msg(b"x")))        # a stream never opened
            c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, grpc_headers(self.HEALTH)))
            c.send(frame(DATA, END_STREAM, 1, grpc_msg(b"")))  # after END_STREAM
            self.assertIsNotNone(c.outcome(1))
        finally:
            c.close()
        self.assert_still_serving()


class T02Http2Abuse(Base):
    def test_rapid_reset(self):
        """HEADERS then RST_STREAM at once, thousands of times on one connection (CVE-2023-44487)."""
        rss0 = rss_kb(SERVER.pid)
        c = H2()
        burst = b""
        sent = 0
        t0 = time.monotonic()
        for i in range(4000):
            sid = 2 * i + 1
            burst += frame(HEADERS, END_HEADERS, sid, grpc_headers("/grpc.health.v1.Health/Check"))
            burst += frame(RST_STREAM, 0, sid, struct.pack(">I", 8))  # CANCEL
            if len(burst) > 64 * 1024:
                if not c.send(burst):
                    break
                sent = i + 1
                burst = b""
        if burst and c.send(burst):
            sent = 4000
        # meanwhile and after, a good client is served
        self.assert_still_serving()
        c.close()
        took = time.monotonic() - t0
        grew = rss_kb(SERVER.pid) - rss0
        print("\n  rapid reset: %d streams opened and reset in %.2f s, RSS +%d KiB" % (sent, took, grew))
        self.assertLess(grew, 200 * 1024)
        self.assert_still_serving()

    def test_oversized_headers(self):
        """A 256 KiB header block spread over CONTINUATION frames: refused (answered, reset or
        the connection closed) or dropped while the connection goes on serving; not buffered."""
        c = H2()
        try:
            block = grpc_headers("/grpc.health.v1.Health/Check", [("x-big", "a" * (256 * 1024))])
            c.send(frame(HEADERS, 0, 1, block[:16384]))
            rest = block[16384:]
            while rest:
                part, rest = rest[:16384], rest[16384:]
                if not c.send(frame(CONTINUATION, 0 if rest else END_HEADERS, 1, part)):
                    break
            got = c.outcome(1)
            self.assertNotEqual(got, "grpc-status 0", got)
            if got is None:
                # gRPC core 1.51 sometimes drops such a stream without a word (about one try in
                # three; docs/reliability.md, finding 5): then the connection must still serve.
                c.send(frame(HEADERS, END_HEADERS, 3, grpc_headers("/grpc.health.v1.Health/Check")))
                c.send(frame(DATA, END_STREAM, 3, grpc_msg(b"")))
                self.assertIn(c.outcome(3), ("grpc-status 0", "closed", "goaway"),
                              "no answer to oversized headers, and the connection serves no more")
        finally:
            c.close()
        self.assert_still_serving()

    def test_settings_and_ping_floods(self):
        c = H2()
        try:
            flood = frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 65535)) * 2000
            flood += frame(PING, 0, 0, b"12345678") * 2000
            for i in range(5):
                if not c.send(flood):
                    break
            self.assert_still_serving()
        finally:
            c.close()
        self.assert_still_serving()

    def test_window_update_overflow(self):
        c = H2()
        try:
            # RFC 9113 6.9.1 makes this a connection error; gRPC core 1.51 does not always close
            # the connection. Either way the others must not notice.
            c.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFFFFFF)) * 2)
            c.send(frame(HEADERS, END_HEADERS, 1, grpc_headers("/grpc.health.v1.Health/Check")))
            c.send(frame(DATA, END_STREAM, 1, grpc_msg(b"")))
            self.assertIsNotNone(c.outcome(1, timeout=2.0) if not c.closed.is_set() else "closed")
        finally:
            c.close()
        self.assert_still_serving()

    def test_preface_then_garbage(self):
        c = H2(preface=False)
        try:
            c.send(PREFACE + os.urandom(4096))
            self.assertTrue(c.closed.wait(ANSWER_S), "the connection stayed open after garbage")
        finally:
            c.close()
        self.assert_still_serving()

    def test_garbage_instead_of_preface(self):
        for data in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", os.urandom(2048), b"\x16\x03\x01\x02\x00" + os.urandom(512)):
            c = H2(preface=False)
            try:
                c.send(data)
                self.assertTrue(c.closed.wait(ANSWER_S), "the connection stayed open after %r" % data[:16])
            finally:
                c.close()
        self.assert_still_serving()

    def test_many_idle_connections_then_good_client(self):
        conns = []
        try:
            for i in range(200):
                conns.append(H2())
            self.assert_still_serving()
        finally:
            for c in conns:
                c.close()
        self.assert_still_serving()


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


if __name__ == "__main__":
    unittest.main()
