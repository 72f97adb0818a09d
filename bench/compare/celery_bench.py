"""Celery side of bench/compare.sh: N no-op tasks through a private redis-server (the broker in
database 0, the result backend in database 1), sent by P producer threads with apply_async and
run by one `celery worker` (prefork pool, --concurrency C) that this script starts. The rate is
N divided by the time from the first send to the last result's date_done (the worker's clock,
stored with each result). Prints one JSON object on stdout.

    /usr/bin/python3 celery_bench.py --redis /path/redis.sock --tasks 5000 --producers 16 --concurrency 2

The module is also the worker's app (`celery -A celery_bench worker`); it reads the socket from
CELERY_BENCH_REDIS and creates the file CELERY_BENCH_READY when the worker is ready. The worker logs
at WARNING: at INFO it writes a line per task, which AGENTZ's worker does not.
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import redis
from celery import Celery, signals

QUEUE = "compare"


def make_app(sock):
    app = Celery("celery_bench")
    app.conf.update(
        broker_url=f"redis+socket://{sock}?virtual_host=0",
        result_backend=f"redis+socket://{sock}?virtual_host=1",
        # One pooled broker connection per producer thread, instead of waiting on the default 10.
        broker_pool_limit=32,
        task_default_queue=QUEUE,
        # Acknowledged after the task ran, so a killed worker's tasks are redelivered: the
        # at-least-once setting, the closest to AGENTZ's claim-then-complete.
        task_acks_late=True,
        worker_hijack_root_logger=False,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
    )

    @app.task(name="noop")
    def noop(i):
        return None

    return app, noop


if os.environ.get("CELERY_BENCH_REDIS"):
    app, noop = make_app(os.environ["CELERY_BENCH_REDIS"])

    @signals.worker_ready.connect
    def _ready(**_):
        open(os.environ["CELERY_BENCH_READY"], "w").close()


def start_worker(sock, concurrency, log_path):
    ready = f"{sock}.celery-ready"
    if os.path.exists(ready):
        os.unlink(ready)
    env = dict(os.environ, CELERY_BENCH_REDIS=sock, CELERY_BENCH_READY=ready)
    here = os.path.dirname(os.path.abspath(__file__))
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_bench", "worker", "--pool", "prefork",
         "--concurrency", str(concurrency), "-Q", QUEUE, "-n", f"compare{os.getpid()}@%h",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"],
        cwd=here, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"celery_bench: the worker exited {proc.returncode}; log {log_path}")
        if os.path.exists(ready):
            return proc
        time.sleep(0.1)
    proc.terminate()
    raise SystemExit(f"celery_bench: the worker was not ready within 120 s; log {log_path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis", required=True, help="redis-server unix socket")
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--producers", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--log", default="/dev/null", help="the worker's log")
    o = ap.parse_args()

    cli = redis.Redis(unix_socket_path=o.redis, db=1)
    cli.flushall()
    worker = start_worker(o.redis, o.concurrency, o.log)
    try:
        app, noop = make_app(o.redis)
        errors = []

        def produce(lo, hi):
            try:
                for i in range(lo, hi):
                    noop.apply_async((i,))
            except Exception as e:  # reported after the join
                errors.append(repr(e))

        ths = [threading.Thread(target=produce, args=(o.tasks * p // o.producers, o.tasks * (p + 1) // o.producers))
               for p in range(o.producers)]
        t0 = time.time()
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        sent_s = time.time() - t0
        if errors:
            raise SystemExit(f"celery_bench: {len(errors)} producers failed: {errors[0]}")
        deadline = time.time() + 600
        while cli.dbsize() < o.tasks:
            if time.time() > deadline or worker.poll() is not None:
                raise SystemExit(f"celery_bench: only {cli.dbsize()} of {o.tasks} results after "
                                 f"{time.time() - t0:.0f} s (worker exit {worker.poll()})")
            time.sleep(0.02)
        last, failed = 0.0, 0
        keys = list(cli.scan_iter("celery-task-meta-*", count=1000))
        for i in range(0, len(keys), 1000):
            for raw in cli.mget(keys[i:i + 1000]):
                meta = json.loads(raw)
                if meta["status"] != "SUCCESS":
                    failed += 1
                done = datetime.fromisoformat(meta["date_done"]).replace(tzinfo=timezone.utc).timestamp()
                last = max(last, done)
        if failed:
            raise SystemExit(f"celery_bench: {failed} of {o.tasks} tasks did not succeed")
        span = last - t0
        print(json.dumps({"system": "celery", "tasks": o.tasks, "producers": o.producers,
                          "concurrency": o.concurrency, "pool": "prefork", "send_per_s": o.tasks / sent_s,
                          "span_s": span, "tasks_per_s": o.tasks / span}))
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


if __name__ == "__main__":
    main()
