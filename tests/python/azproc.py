"""Starting and stopping a real agentzd for the Python suites: the process, its stderr in a log
file, and the address from the "AGENTZ is running: gRPC at HOST:PORT" line it prints once it
serves. Not a test module (unittest discovery only loads test_*.py)."""

import queue
import re
import signal
import subprocess
import threading
import time

READY_RE = re.compile(r"AGENTZ is running: gRPC at (\S+)")


def start(argv, env, log_path, append=False, ready_s=90):
    """Runs argv (agentzd first) with env, stderr to log_path (appended to with append); returns (process, address) once
    it prints its ready line. Raises RuntimeError (after killing it) if it exits or stays silent
    for ready_s seconds."""
    with open(log_path, "a" if append else "w") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                env=env, text=True)
    lines = queue.Queue()

    def pump():
        for line in iter(proc.stdout.readline, ""):
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + ready_s
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            line = None
        if line is None:
            proc.kill()
            proc.wait()
            proc.stdout.close()
            raise RuntimeError("%s did not become ready within %d s" % (argv[0], ready_s))
        m = READY_RE.search(line)
        if m:
            return proc, m.group(1)


def stop(proc, timeout_s=30):
    """SIGTERM, then the exit status; None (after SIGKILL) if it did not stop within timeout_s."""
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        rc = None
    proc.stdout.close()
    return rc
