"""The deployment files (deploy/docker, deploy/compose.yaml, deploy/k8s, deploy/grafana) checked
against the code and the docs they configure, with whatever tools this machine has:

- the Kubernetes manifests rendered by `kubectl kustomize` (base and every overlay), then their
  properties: probes, non-root read-only containers, requests, a termination grace covering the
  server's drain, an autoscaler and a disruption budget per Deployment, network policies, scrape
  annotations; the ConfigMap/Secret hold exactly the settings the docs' tables and `--help` list,
  and agentzd/agentz-gateway accept their values (`--help` parses and validates every variable);
- compose.yaml through `docker-compose config` and its structure (healthchecks, depends_on
  conditions, named volumes, builds), its environment accepted by agentzd;
- the Dockerfile: a non-root USER, a HEALTHCHECK, the runtime stage's packages cover every shared
  library `ldd` reports for the built binaries (mapped to packages with `dpkg -S`), the build stage
  has every build package of deploy/install-deps.sh;
- the Grafana dashboard names only metrics of the Prometheus contract (METRICS below), and all.

A container image is built and the compose stack run only when a container engine can do it here
(it cannot without an engine or a local debian:12 image); every check prints what it did.

    /usr/bin/python3 -m unittest tests/python/test_deploy.py -v
"""

import fnmatch
import json
import os
import re
import queue
import shutil
import socket
import subprocess
import threading
import time
import unittest

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(REPO, "build", "bin")
K8S = os.path.join(REPO, "deploy", "k8s")
OVERLAYS = sorted(d for d in os.listdir(os.path.join(K8S, "overlays"))
                  if os.path.isfile(os.path.join(K8S, "overlays", d, "kustomization.yaml")))
DOCKERFILE = os.path.join(REPO, "deploy", "docker", "Dockerfile")
COMPOSE = os.path.join(REPO, "deploy", "compose.yaml")
DASHBOARD = os.path.join(REPO, "deploy", "grafana", "agentz.json")

# The metrics contract (what every agentzd role and agentz-gateway serve on /metrics).
METRICS = {
    "agentz_rpc_requests_total", "agentz_rpc_duration_seconds", "agentz_tasks_queued",
    "agentz_tasks", "agentz_worker_inflight_calls", "agentz_llm_request_duration_seconds",
    "agentz_llm_tokens_total", "agentz_llm_cost_usd_total", "agentz_llm_errors_total",
    "agentz_streams_open", "agentz_outbox_pending", "agentz_outbox_lag_seconds",
    "agentz_pg_pool_connections", "agentz_pg_pool_wait_seconds", "agentz_redis_errors_total",
    "agentz_http_requests_total", "agentz_http_duration_seconds", "agentz_http_streams_open",
    "agentz_build_info", "process_resident_memory_bytes", "process_open_fds",
    "process_cpu_seconds_total", "process_start_time_seconds",
}
# Settings of the metrics contract; the standalone gateway's is documented in prose
# (configuration.md#the-gateway), in no table, so without built binaries only this names it.
CONTRACT_SETTINGS = {"AGENTZ_METRICS_LISTEN", "AGENTZ_GATEWAY_METRICS_LISTEN"}
# Settings that hold credentials: in the Secret, never in the ConfigMap.
SECRET_SETTINGS = {
    "AGENTZ_DATABASE_URL", "AGENTZ_REDIS_URL", "AGENTZ_MASTER_KEY", "AGENTZ_MASTER_KEY_PREVIOUS",
    "AGENTZ_WEBHOOK_SECRET", "AGENTZ_EMBEDDINGS_API_KEY", "AGENTZ_LLM_API_KEY", "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
}


def say(msg):
    print("test_deploy: " + msg, flush=True)


def run(cmd, timeout=30, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def duration_s(v, bare_unit=1.0):
    """'10s', '2m', '500ms', '7d' in seconds; a bare number counts in bare_unit seconds."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?", str(v).strip())
    if not m:
        raise ValueError("not a duration: %r" % v)
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: bare_unit}[m.group(2)]
    return float(m.group(1)) * scale


# ------------------------------------------------------------------ what the docs and code say

def doc_variables(path, section=None):
    """The variables of every markdown table with a 'variable' column (within `## section`)."""
    text = read(path)
    if section:
        text = text.split("\n## " + section, 1)[1].split("\n## ", 1)[0]
    found, col = set(), None
    for line in text.splitlines():
        if not line.startswith("|"):
            col = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if col is None:
            lower = [c.lower() for c in cells]
            col = lower.index("variable") if "variable" in lower else -1
            continue
        if col < 0 or col >= len(cells) or set(cells[col]) <= set("-: "):
            continue
        prev = None
        for tok in re.findall(r"`([A-Z_][A-Z0-9_]*)`", cells[col]):
            if tok.startswith("_") and prev:  # `AGENTZ_GATEWAY_TLS_CERT`, `_KEY`
                tok = prev.rsplit("_", 1)[0] + tok
            found.add(tok)
            prev = tok
    return found


def documented_settings():
    return (doc_variables(os.path.join(REPO, "docs", "configuration.md"))
            | doc_variables(os.path.join(REPO, "docs", "gateway.md"), "Settings")
            | doc_variables(os.path.join(REPO, "docs", "llm.md"), "Configuration"))


def help_settings():
    """The env names `--help` of agentzd and agentz-gateway print, or None when not built."""
    names = set()
    for b in ("agentzd", "agentz-gateway"):
        path = os.path.join(BIN, b)
        if not os.access(path, os.X_OK):
            return None
        out = run([path, "--help"], env={"PATH": os.environ.get("PATH", "")}).stdout
        names |= set(re.findall(r"env ([A-Z][A-Z0-9_]+)", out))
    return names


def drain_margin_s():
    """The margin docs/operations.md asks a supervisor's stop timeout to add to the grace."""
    m = re.search(r"at least `AGENTZ_SHUTDOWN_GRACE \+ (\d+)s`",
                  read(os.path.join(REPO, "docs", "operations.md")).replace("\n", " "))
    if not m:
        raise AssertionError("docs/operations.md no longer states the stop timeout "
                             "(`AGENTZ_SHUTDOWN_GRACE + Ns`)")
    return int(m.group(1))


def drain_bound_s(config, component):
    """Longest time agentzd or agentz-gateway may drain after SIGTERM with these settings."""
    if component == "gateway":
        return duration_s(config.get("AGENTZ_GATEWAY_SHUTDOWN_GRACE", "10s"))
    grace = duration_s(config.get("AGENTZ_SHUTDOWN_GRACE", "10s"))
    if component == "worker":  # the worker stops beside the server, not after it
        grace = max(grace, duration_s(config.get("AGENTZ_WORKER_SHUTDOWN_GRACE_MS", "10000"), 0.001))
    return grace


def accepts(binary, env, args=()):
    """Runs `binary [args] --help` with env: 0 when every variable's value is valid."""
    full = {"PATH": os.environ.get("PATH", "")}
    full.update(env)
    return run([os.path.join(BIN, binary), *args, "--help"], env=full)


# ------------------------------------------------------------------ kubernetes

def find_kubectl():
    k = shutil.which("kubectl")
    if not k:
        return None, "no kubectl on PATH (deploy/install-deps.sh --test installs kubernetes-client)"
    r = run([k, "version", "--client"], env=dict(os.environ, KUBECONFIG="/dev/null"))
    first = (r.stdout or r.stderr).strip().splitlines()[:1]
    return k, first[0] if first else "version unknown"


def render(kubectl, target):
    """kubectl kustomize of deploy/k8s/<target>: the list of objects."""
    r = run([kubectl, "kustomize", os.path.join(K8S, target)],
            env=dict(os.environ, KUBECONFIG="/dev/null"))
    if r.returncode != 0:
        raise AssertionError("kubectl kustomize %s failed:\n%s" % (target, r.stderr))
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def raw_base():
    """The base's files as they are (without kubectl nothing can apply overlays)."""
    kust = yaml.safe_load(read(os.path.join(K8S, "base", "kustomization.yaml")))
    objs = []
    for f in kust["resources"]:
        objs += [d for d in yaml.safe_load_all(read(os.path.join(K8S, "base", f))) if d]
    return objs


def by_kind(objs, kind):
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def component(dep):
    return dep["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]


def selects(selector, labels):
    """Does a label selector (matchLabels/matchExpressions, or a plain map) match labels?"""
    ml = selector.get("matchLabels", {} if "matchExpressions" in selector else selector)
    if any(labels.get(k) != v for k, v in ml.items()):
        return False
    for e in selector.get("matchExpressions", []):
        have = e["key"] in labels
        if e["operator"] == "In" and not (have and labels[e["key"]] in e["values"]):
            return False
        if e["operator"] == "NotIn" and have and labels[e["key"]] in e["values"]:
            return False
        if e["operator"] == "Exists" and not have:
            return False
        if e["operator"] == "DoesNotExist" and have:
            return False
    return True


class Kubernetes(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.kubectl, why = find_kubectl()
        cls.renders = {}
        if cls.kubectl:
            say("kubernetes: rendering base and overlays %s with %s (%s)"
                % (", ".join(OVERLAYS), cls.kubectl, why))
            cls.renders["base"] = render(cls.kubectl, "base")
            for o in OVERLAYS:
                cls.renders["overlays/" + o] = render(cls.kubectl, "overlays/" + o)
        else:
            say("kubernetes: %s; checking the base's files unrendered, overlays NOT checked" % why)
            cls.renders["base"] = raw_base()
        say("kubernetes: `kubectl apply --dry-run=client` is not run: it needs a reachable API "
            "server even with --validate=false (it reads the resource mapping)")

    def test_overlays_exist(self):
        self.assertIn("dev", OVERLAYS)
        self.assertIn("production", OVERLAYS)

    def each(self):
        for name, objs in self.renders.items():
            with self.subTest(render=name):
                yield name, objs

    def config_of(self, objs):
        cm = by_kind(objs, "ConfigMap").get("agentz-config")
        self.assertIsNotNone(cm, "no ConfigMap agentz-config")
        return cm["data"]

    def test_deployments(self):
        margin = drain_margin_s()
        for name, objs in self.each():
            deps = by_kind(objs, "Deployment")
            agentz = {n: d for n, d in deps.items()
                      if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") == "agentz"}
            self.assertEqual(sorted(component(d) for d in agentz.values()), ["api", "gateway", "worker"])
            config = self.config_of(objs)
            for dname, d in agentz.items():
                pod = d["spec"]["template"]["spec"]
                meta = d["spec"]["template"]["metadata"]
                comp = component(d)
                psc = pod.get("securityContext", {})
                self.assertTrue(psc.get("runAsNonRoot"), dname)
                self.assertNotEqual(psc.get("runAsUser", 0), 0, dname)
                self.assertFalse(pod.get("automountServiceAccountToken", True), dname)
                self.assertNotIn("replicas", d["spec"], "%s: the autoscaler owns replicas" % dname)
                ann = meta.get("annotations", {})
                self.assertEqual(ann.get("prometheus.io/scrape"), "true", dname)
                self.assertEqual(ann.get("prometheus.io/port"), "9464", dname)
                self.assertEqual(ann.get("prometheus.io/path"), "/metrics", dname)
                self.assertEqual(config.get("AGENTZ_GATEWAY_METRICS_LISTEN" if comp == "gateway"
                                            else "AGENTZ_METRICS_LISTEN"), "0.0.0.0:9464", dname)
                self.assertEqual(len(pod["containers"]), 1, dname)
                c = pod["containers"][0]
                ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
                self.assertEqual(ports.get("metrics"), 9464, dname)
                csc = c.get("securityContext", {})
                self.assertTrue(csc.get("readOnlyRootFilesystem"), dname)
                self.assertIs(csc.get("allowPrivilegeEscalation"), False, dname)
                self.assertIn("ALL", csc.get("capabilities", {}).get("drop", []), dname)
                req = c.get("resources", {}).get("requests", {})
                self.assertTrue(req.get("cpu") and req.get("memory"), "%s: requests %s" % (dname, req))
                self.assertTrue(c.get("resources", {}).get("limits", {}).get("memory"), dname)
                refs = [e.get("configMapRef", {}).get("name") for e in c.get("envFrom", [])]
                self.assertIn("agentz-config", refs, dname)
                for probe in ("readinessProbe", "livenessProbe"):
                    self.assertIn(probe, c, "%s has no %s" % (dname, probe))
                if comp == "gateway":
                    self.assertEqual(c["args"], ["agentz-gateway"])
                    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                        hg = c[probe]["httpGet"]
                        self.assertEqual(hg["path"], path, dname)
                        port = ports.get(hg["port"], hg["port"])
                        self.assertEqual(port, 8080, dname)
                    self.assertTrue(config["AGENTZ_GATEWAY_LISTEN"].endswith(":8080"))
                    upstream = config["AGENTZ_GATEWAY_UPSTREAM"]
                    svc = by_kind(objs, "Service").get(upstream.split(":")[0])
                    self.assertIsNotNone(svc, "the gateway's upstream %s is no Service" % upstream)
                    self.assertEqual(svc["spec"]["selector"]["app.kubernetes.io/component"], "api")
                else:
                    self.assertEqual(c["args"], ["--roles", comp], dname)
                    for probe in ("readinessProbe", "livenessProbe"):
                        self.assertEqual(c[probe]["grpc"]["port"], 50051, "%s %s" % (dname, probe))
                    self.assertTrue(config["AGENTZ_GRPC_LISTEN"].endswith(":50051"))
                    self.assertEqual(ports.get("grpc"), 50051, dname)
                    refs = [e.get("secretRef", {}).get("name") for e in c.get("envFrom", [])]
                    self.assertIn("agentz-secrets", refs, dname)
                    # The master key file (fails the start when the Secret's key is empty).
                    mk = config["AGENTZ_MASTER_KEY_FILE"]
                    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
                    vols = {v["name"]: v for v in pod.get("volumes", [])}
                    hit = [n for n, p in mounts.items() if mk.startswith(p.rstrip("/") + "/")]
                    self.assertTrue(hit, "%s: nothing mounted at %s" % (dname, mk))
                    self.assertEqual(vols[hit[0]]["secret"]["secretName"], "agentz-secrets")
                    for m in mounts.values():  # writable paths are volumes
                        self.assertIn(m, ("/tmp", "/var/lib/agentz", os.path.dirname(mk)), dname)
                pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
                pre_s = float(pre[1]) if len(pre) == 2 and pre[0].endswith("sleep") else 0.0
                need = pre_s + drain_bound_s(config, comp) + margin
                tgps = pod.get("terminationGracePeriodSeconds", 30)
                self.assertGreaterEqual(tgps, need, "%s: terminationGracePeriodSeconds %s < preStop %s "
                                        "+ drain %s + %s" % (dname, tgps, pre_s, need - pre_s - margin, margin))
                if comp != "worker":  # traffic is routed to these: endpoints must drop them first
                    self.assertGreater(pre_s, 0, "%s has no preStop sleep" % dname)
            say("kubernetes %s: %d Deployments have probes, non-root read-only containers, requests, "
                "grace >= preStop + drain + %ds" % (name, len(agentz), margin))

    def test_autoscalers_and_budgets(self):
        for name, objs in self.each():
            deps = {n: d for n, d in by_kind(objs, "Deployment").items() if n.startswith("agentz-")
                    and d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") == "agentz"}
            hpas = list(by_kind(objs, "HorizontalPodAutoscaler").values())
            targets = sorted(h["spec"]["scaleTargetRef"]["name"] for h in hpas)
            self.assertEqual(targets, sorted(deps), "one autoscaler per Deployment")
            for h in hpas:
                self.assertEqual(h["apiVersion"], "autoscaling/v2")
                d = deps[h["spec"]["scaleTargetRef"]["name"]]
                self.assertLessEqual(h["spec"]["minReplicas"], h["spec"]["maxReplicas"])
                metrics = h["spec"]["metrics"]
                if component(d) == "worker":
                    ext = [m for m in metrics if m["type"] == "External"]
                    self.assertEqual([m["external"]["metric"]["name"] for m in ext], ["agentz_tasks_queued"])
                else:
                    self.assertEqual([(m["type"], m["resource"]["name"]) for m in metrics], [("Resource", "cpu")])
            pdbs = list(by_kind(objs, "PodDisruptionBudget").values())
            covered = []
            for p in pdbs:
                self.assertEqual(p["apiVersion"], "policy/v1")
                hit = [n for n, d in deps.items()
                       if selects(p["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]
                self.assertEqual(len(hit), 1, "PDB %s selects %s" % (p["metadata"]["name"], hit))
                covered += hit
                hpa = next(h for h in hpas if h["spec"]["scaleTargetRef"]["name"] == hit[0])
                # a budget the minimum replica count cannot satisfy blocks every node drain
                self.assertLess(p["spec"].get("minAvailable", 0), max(hpa["spec"]["minReplicas"], 1) + 0.5)
                if hpa["spec"]["minReplicas"] == 1:
                    self.assertEqual(p["spec"].get("minAvailable", 0), 0)
            self.assertEqual(sorted(covered), sorted(deps), "one PodDisruptionBudget per Deployment")
            # PostgreSQL: every agentzd at its maximum holds its pool, the relay's LISTEN connection
            # and (workers) the cancellation check's; superuser_reserved_connections is 3.
            pool = int(self.config_of(objs)["AGENTZ_DB_POOL_SIZE"])
            maxima = {component(deps[h["spec"]["scaleTargetRef"]["name"]]): h for h in hpas}
            budget = int(maxima["worker"]["metadata"]["annotations"]["agentz.io/postgres-max-connections"])
            used = sum(maxima[c]["spec"]["maxReplicas"] for c in ("api", "worker")) * (pool + 2)
            self.assertLessEqual(used, budget - 3, "%s: %d PostgreSQL connections at the maxima" % (name, used))
            for s in by_kind(objs, "Service").values():
                pods = [d for d in by_kind(objs, "Deployment").values() if selects(s["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]
                pods += [d for d in by_kind(objs, "StatefulSet").values() if selects(s["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]
                self.assertEqual(len(pods), 1, "Service %s selects %d workloads" % (s["metadata"]["name"], len(pods)))
            say("kubernetes %s: %d autoscalers (worker on agentz_tasks_queued), %d disruption budgets"
                % (name, len(hpas), len(pdbs)))

    def test_network_policies(self):
        for name, objs in self.each():
            pols = list(by_kind(objs, "NetworkPolicy").values())
            pods = {component(d): d["spec"]["template"]["metadata"]["labels"]
                    for d in by_kind(objs, "Deployment").values()
                    if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") == "agentz"}

            def rules(comp, kind):
                return [r for p in pols if selects(p["spec"]["podSelector"], pods[comp])
                        and kind.capitalize() in p["spec"]["policyTypes"] for r in p["spec"].get(kind, [])]

            def open_ports(comp):  # ports reachable from anywhere (a rule without `from`)
                return {pt["port"] for r in rules(comp, "ingress") if not r.get("from") for pt in r.get("ports", [])}

            for comp in pods:
                self.assertTrue(any(selects(p["spec"]["podSelector"], pods[comp]) and {"Ingress", "Egress"} <= set(p["spec"]["policyTypes"]) for p in pols),
                                "%s is not under a default-deny policy" % comp)
            self.assertEqual(open_ports("gateway"), {8080})
            self.assertEqual(open_ports("api"), set())
            self.assertEqual(open_ports("worker"), set())
            api_from = [f for r in rules("api", "ingress") for f in r.get("from", [])
                        if any(pt["port"] == 50051 for pt in r.get("ports", []))]
            self.assertTrue(api_from)
            for f in api_from:
                self.assertIn("podSelector", f)
                self.assertNotIn("namespaceSelector", f)
                self.assertTrue(selects(f["podSelector"], pods["gateway"]))
            for comp in ("api", "worker"):
                ports = {pt["port"] for r in rules(comp, "egress") for pt in r.get("ports", [])}
                self.assertTrue({53, 5432, 6379} <= ports, "%s egress %s" % (comp, ports))
            gw_out = {pt["port"] for r in rules("gateway", "egress") for pt in r.get("ports", [])}
            self.assertEqual(gw_out, {53, 50051}, "the gateway talks to the api (and DNS) only")
            say("kubernetes %s: %d network policies: only the gateway's 8080 is open, the api's 50051 "
                "only to the gateway, PostgreSQL/Redis/DNS egress" % (name, len(pols)))

    def test_settings_cover_the_docs_and_help(self):
        documented = documented_settings()
        self.assertGreater(len(documented), 60, "the docs' tables were not parsed")
        cm = self.config_of(raw_base())
        secret = yaml.safe_load(read(os.path.join(K8S, "base", "secret.example.yaml")))["stringData"]
        self.assertEqual(set(cm) & set(secret), set(), "a setting both in the ConfigMap and the Secret")
        self.assertEqual(set(secret), SECRET_SETTINGS, "the Secret holds exactly the credentials")
        self.assertEqual(set(cm) & SECRET_SETTINGS, set(), "a credential in the ConfigMap")
        have = set(cm) | set(secret)
        self.assertEqual(sorted(documented - have), [], "documented settings missing from the ConfigMap/Secret")
        helped = help_settings()
        if helped is None:
            say("settings: build/bin/agentzd or agentz-gateway not built: --help cross-check NOT run")
        else:
            self.assertEqual(sorted(helped - have), [], "settings of --help missing from the ConfigMap/Secret")
        self.assertEqual(sorted(have - documented - (helped or set()) - CONTRACT_SETTINGS), [],
                         "ConfigMap/Secret keys that are no documented setting")
        # The dev overlay's Secret has every key the example has.
        if self.kubectl:
            dev = by_kind(self.renders["overlays/dev"], "Secret")["agentz-secrets"]["stringData"]
            self.assertEqual(set(dev), set(secret))
            self.assertEqual(len(__import__("base64").b64decode(dev["AGENTZ_MASTER_KEY"])), 32)
            self.assertNotIn("agentz-secrets", by_kind(self.renders["overlays/production"], "Secret"),
                             "production must not render the Secret (an apply would overwrite it)")
        say("settings: ConfigMap (%d) + Secret (%d) hold the %d documented settings%s, nothing else" % (
            len(cm), len(secret), len(documented),
            "" if helped is None else " and the %d of --help" % len(helped)))

    def test_values_are_accepted(self):
        if not (os.access(os.path.join(BIN, "agentzd"), os.X_OK) and os.access(os.path.join(BIN, "agentz-gateway"), os.X_OK)):
            say("settings: build/bin/agentzd not built: values NOT run through --help")
            return
        secret = yaml.safe_load(read(os.path.join(K8S, "base", "secret.example.yaml")))["stringData"]
        for name, objs in self.each():
            env = dict(self.config_of(objs))
            secrets = by_kind(objs, "Secret").get("agentz-secrets")
            env.update(secrets["stringData"] if secrets else secret)
            for d in by_kind(objs, "Deployment").values():
                c = d["spec"]["template"]["spec"]["containers"][0]
                if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") != "agentz":
                    continue
                args = c["args"]
                binary, rest = ("agentz-gateway", args[1:]) if args[0] == "agentz-gateway" else ("agentzd", args)
                r = accepts(binary, env, rest)
                self.assertEqual(r.returncode, 0, "%s %s refuses the %s settings: %s" % (binary, rest, name, r.stderr))
            say("settings %s: agentzd --roles api|worker and agentz-gateway accept every value" % name)


# ------------------------------------------------------------------ compose

class Compose(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.doc = yaml.safe_load(read(COMPOSE))

    def test_lint(self):
        tool = shutil.which("docker-compose")
        if not tool:
            say("compose: no docker-compose (deploy/install-deps.sh --test installs it): lint NOT run")
            return
        r = run([tool, "-f", COMPOSE, "config", "-q"], cwd=os.path.dirname(COMPOSE))
        self.assertEqual(r.returncode, 0, r.stderr)
        r = run([tool, "-f", COMPOSE, "config"], cwd=os.path.dirname(COMPOSE))
        resolved = yaml.safe_load(r.stdout)
        self.assertEqual(set(resolved["services"]), set(self.doc["services"]))
        checked = os.access(os.path.join(BIN, "agentzd"), os.X_OK)
        if checked:
            for n, s in resolved["services"].items():
                cmd = s.get("command") or []
                # a variable without a value is passed through from compose's environment
                env = {k: str(v) for k, v in (s.get("environment") or {}).items() if v is not None}
                if s.get("image", "").endswith("agentz:0.1.0") and cmd[:1] == ["--roles"]:
                    rr = accepts("agentzd", env, cmd)
                    self.assertEqual(rr.returncode, 0, "%s: %s" % (n, rr.stderr))
                if cmd[:1] == ["agentz-gateway"]:
                    rr = accepts("agentz-gateway", env)
                    self.assertEqual(rr.returncode, 0, "%s: %s" % (n, rr.stderr))
        say("compose: `%s config` accepts deploy/compose.yaml (%s); %s"
            % (os.path.basename(tool), run([tool, "version", "--short"]).stdout.strip(),
               "agentzd and agentz-gateway accept its environment" if checked
               else "build/bin/agentzd not built: its environment NOT run through --help"))

    def test_structure(self):
        services = self.doc["services"]
        volumes = set(self.doc.get("volumes") or {})
        margin = drain_margin_s()
        roles = {}
        for n, s in services.items():
            if n != "bootstrap":  # a one-shot job: the others wait for it to exit 0 instead
                self.assertIn("healthcheck", s, "%s has no healthcheck" % n)
            for dep, cond in (s.get("depends_on") or {}).items():
                self.assertIn(dep, services, n)
                self.assertIn(cond["condition"], ("service_healthy", "service_completed_successfully"), n)
                if cond["condition"] == "service_healthy":
                    self.assertIn("healthcheck", services[dep], "%s waits for %s's health" % (n, dep))
            for v in s.get("volumes", []):
                src = v.split(":")[0]
                if not src.startswith((".", "/")):
                    self.assertIn(src, volumes, "%s: volume %s is not declared" % (n, src))
            if "build" in s:
                ctx = os.path.normpath(os.path.join(os.path.dirname(COMPOSE), s["build"]["context"]))
                self.assertTrue(os.path.isfile(os.path.join(ctx, s["build"]["dockerfile"])), n)
            self.assertTrue(s.get("image"), n)
            cmd = s.get("command") or []
            if cmd[:1] == ["--roles"]:
                roles.setdefault(cmd[1], []).append(n)
            if cmd[:1] == ["agentz-gateway"]:
                roles.setdefault("gateway", []).append(n)
            if n in ("api", "gateway") or n.startswith("worker"):
                comp = "worker" if n.startswith("worker") else n
                env = s.get("environment", {})
                self.assertGreaterEqual(duration_s(s["stop_grace_period"]), drain_bound_s(env, comp) + margin, n)
        self.assertEqual(len(roles.get("api", [])), 1)
        self.assertEqual(len(roles.get("worker", [])), 2)
        self.assertEqual(len(roles.get("gateway", [])), 1)
        ids = [services[w]["environment"]["AGENTZ_WORKER_ID"] for w in roles["worker"]]
        self.assertEqual(len(set(ids)), 2, "each worker needs its own AGENTZ_WORKER_ID")
        self.assertTrue(services["postgres"]["image"].split(":")[-1].startswith("15"))
        self.assertTrue(services["redis"]["image"].split(":")[-1].startswith("7"))
        for n in roles["api"] + roles["worker"]:
            self.assertEqual(services[n]["depends_on"]["bootstrap"]["condition"], "service_completed_successfully")
        say("compose: %d services (api, 2 workers, gateway, PostgreSQL 15, Redis 7, bootstrap), "
            "healthchecks, depends_on conditions, %d named volumes" % (len(services), len(volumes)))


# ------------------------------------------------------------------ the image

def dockerfile_stages():
    """[(name, [instructions])] with continuation lines joined and comments dropped."""
    stages, text = [], re.sub(r"\\\n", " ", re.sub(r"(?m)^\s*#.*\n", "", read(DOCKERFILE)))
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            stages.append((m.group(2) or m.group(1), [("FROM", m.group(1))]))
        else:
            stages[-1][1].append((word.upper(), rest.strip()))
    return stages


def apt_packages(instructions):
    pkgs = []
    for word, rest in instructions:
        if word == "RUN" and "apt-get install" in rest:
            seg = rest.split("apt-get install", 1)[1].split("&&")[0]
            pkgs += [t for t in seg.split() if not t.startswith("-")]
    return pkgs


def install_deps_groups():
    """deploy/install-deps.sh's PACKAGES, by the comment line heading each group."""
    body = read(os.path.join(REPO, "deploy", "install-deps.sh")).split("PACKAGES=(", 1)[1].split("\n)", 1)[0]
    groups, cur = {}, None
    for line in body.splitlines():
        line = line.strip()
        if line.startswith("#"):
            cur = line.lstrip("# ")
        elif line:
            groups.setdefault(cur, []).extend(line.split())
    return groups


class Image(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stages = dockerfile_stages()
        cls.runtime = cls.stages[-1][1]
        cls.build = dict(cls.stages)["build"]

    def test_runtime_stage(self):
        base = self.runtime[0][1]
        self.assertTrue(base.startswith("debian:12"), base)
        self.assertTrue(self.build[0][1].startswith("debian:12"))
        users = [r for w, r in self.runtime if w == "USER"]
        self.assertTrue(users, "the runtime stage has no USER")
        self.assertNotIn(users[-1].split(":")[0], ("0", "root"))
        checks = [r for w, r in self.runtime if w == "HEALTHCHECK"]
        self.assertEqual(len(checks), 1)
        self.assertIn("CMD", checks[0])
        exposed = {p for w, r in self.runtime if w == "EXPOSE" for p in r.split()}
        self.assertEqual(exposed, {"50051", "8080", "9464"})
        self.assertTrue([r for w, r in self.runtime if w == "ENTRYPOINT"])
        env = " ".join(r for w, r in self.runtime if w == "ENV")
        for want in ("AGENTZ_METRICS_LISTEN=0.0.0.0:9464", "AGENTZ_GATEWAY_WEB_DIR=/usr/share/agentz/web",
                     "AGENTZ_GRPC_LISTEN=0.0.0.0:50051", "AGENTZ_GATEWAY_LISTEN=0.0.0.0:8080"):
            self.assertIn(want, env)
        copies = [r for w, r in self.runtime if w == "COPY"]
        self.assertTrue(any("/src/web/dist /usr/share/agentz/web" in c for c in copies))
        for c in copies:
            if "--from=" not in c:
                for src in c.split()[:-1]:
                    self.assertTrue(os.path.exists(os.path.join(REPO, src)), src)
        say("image: runtime stage on %s runs as USER %s, HEALTHCHECK, EXPOSE %s"
            % (base, users[-1], " ".join(sorted(exposed))))

    def test_dockerignore(self):
        pats = [p.strip() for p in read(os.path.join(REPO, ".dockerignore")).splitlines()
                if p.strip() and not p.startswith("#")]

        def ignored(path):
            return any(fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/") for p in pats)

        for p in ("build/bin/agentzd", "build-asan/x", ".agentz/pg", "web/node_modules/x", "web/dist/index.html", ".git/HEAD"):
            self.assertTrue(ignored(p), "%s is sent to the build" % p)
        for p in ("server/main.c", "web/package-lock.json", "web/src/main.tsx", "deploy/web.sh", "proto/agentz/v1/agent.proto", "CMakeLists.txt"):
            self.assertFalse(ignored(p), "%s is needed by the build" % p)
        say("image: .dockerignore leaves out build trees, data dirs, node_modules, web/dist")

    def test_build_stage_has_the_build_packages(self):
        have = set(apt_packages(self.build))
        groups = install_deps_groups()
        need = set()
        for title, pkgs in groups.items():
            if title.startswith(("build", "gRPC", "libraries", "the HTTP gateway")):
                need |= set(pkgs)
        need.add("libcunit1-dev")  # CMakeLists.txt requires CUnit at configure time
        self.assertGreater(len(need), 15)
        self.assertEqual(sorted(need - have), [], "build packages of deploy/install-deps.sh missing in the Dockerfile")
        say("image: build stage installs the %d build packages of deploy/install-deps.sh" % len(need))

    def test_runtime_packages_cover_the_libraries(self):
        bins = [os.path.join(BIN, b) for b in ("agentzd", "agentz-gateway", "agentz")]
        if not all(os.access(b, os.X_OK) for b in bins):
            say("image: binaries not built: shared-library coverage NOT checked")
            return
        if not shutil.which("dpkg-query"):
            say("image: no dpkg: shared-library coverage NOT checked")
            return
        libs = set()
        for b in bins:
            libs |= set(re.findall(r"=> (/\S+) \(", run(["ldd", b]).stdout))
        self.assertGreater(len(libs), 10)
        owners = {}
        r = run(["dpkg", "-S", *sorted(libs), *sorted(os.path.realpath(l) for l in libs)])
        for line in r.stdout.splitlines():
            pkg, _, path = line.partition(": ")
            owners[path] = pkg.split(":")[0].split(",")[0]
        # Installed packages: priority, dependencies, provided names (for the dependency closure).
        info, provides = {}, {}
        out = run(["dpkg-query", "-W", "-f", "${Package}\t${Priority}\t${Pre-Depends}, ${Depends}\t${Provides}\n"]).stdout
        for line in out.splitlines():
            name, prio, deps, prov = (line.split("\t") + ["", "", ""])[:4]
            alts = [[re.sub(r"[:(].*", "", a).strip() for a in d.split("|")] for d in deps.split(",") if d.strip()]
            info[name] = (prio, alts)
            for p in prov.split(","):
                if p.strip():
                    provides.setdefault(re.sub(r"[ (].*", "", p.strip()), []).append(name)
        closure, todo = set(), list(apt_packages(self.runtime))
        while todo:
            p = todo.pop()
            for real in [p] + provides.get(p, []):
                if real in closure or real not in info:
                    continue
                closure.add(real)
                for alt in info[real][1]:
                    todo.extend(alt)
        missing = []
        for lib in sorted(libs):
            pkg = owners.get(lib) or owners.get(os.path.realpath(lib))
            self.assertIsNotNone(pkg, "no package owns %s" % lib)
            if pkg not in closure and info.get(pkg, ("",))[0] != "required":
                missing.append("%s (%s)" % (lib, pkg))
        self.assertEqual(missing, [], "libraries the runtime stage does not install")
        say("image: the runtime packages cover all %d shared libraries of agentzd, agentz-gateway, agentz"
            % len(libs))

    def test_container_runtime(self):
        """Builds and runs only where an engine can; says exactly why not otherwise."""
        facts = []
        docker = shutil.which("docker")
        if docker:
            r = run([docker, "info", "--format", "{{.ServerVersion}}"], timeout=20)
            facts.append("docker: " + ("engine %s" % r.stdout.strip() if r.returncode == 0 else
                                       "client only, no engine (%s)" % (r.stderr.strip().splitlines() or ["?"])[-1]))
        else:
            facts.append("docker: not installed")
        podman = shutil.which("podman")
        if podman:
            have = [img for img in ("debian:12", "debian:12-slim")
                    if run([podman, "image", "exists", img], timeout=20).returncode == 0]
            facts.append("podman: installed; base images in local storage: %s" % (", ".join(have) or "none"))
        else:
            facts.append("podman: not installed")
        say("containers: " + "; ".join(facts))
        say("containers: image NOT built and compose stack NOT run: a build compiles everything from "
            "scratch (tens of minutes on two cores, far beyond this suite's budget) from debian:12 and "
            "debian:12-slim, and the stack needs the postgres:15 and redis:7 images, none of which "
            "Docker Hub (unreachable here) can supply; the checks above ran instead")


class Healthcheck(unittest.TestCase):
    """deploy/docker/healthcheck.sh (the image's HEALTHCHECK) against a real agentzd."""

    def test_healthcheck_script(self):
        agentzd = os.path.join(BIN, "agentzd")
        if not os.access(agentzd, os.X_OK) or not shutil.which("curl"):
            say("healthcheck: build/bin/agentzd or curl missing: the image's healthcheck NOT run")
            return
        script = os.path.join(REPO, "deploy", "docker", "healthcheck.sh")
        data = os.path.join(os.path.abspath(os.environ.get("AGENTZ_TEST_DIR") or os.path.join(REPO, "build")),
                            "python-deploy")
        os.makedirs(data, exist_ok=True)
        env = dict(os.environ, AGENTZ_METRICS_LISTEN="127.0.0.1:0")
        for k in ("AGENTZ_DATABASE_URL", "AGENTZ_REDIS_URL"):
            env.pop(k, None)
        proc = subprocess.Popen([agentzd, "--roles", "api,worker,gateway", "--data-dir", data,
                                 "--listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        try:
            grpc = gw = None
            lines = queue.Queue()
            reader = threading.Thread(target=lambda: [lines.put(l) for l in proc.stdout] + [lines.put("")],
                                      daemon=True)
            reader.start()
            deadline = time.monotonic() + 60
            while True:
                try:
                    line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
                except queue.Empty:
                    break
                if not line:
                    break
                m = re.search(r"AGENTZ is running: gRPC at (\S+)", line)
                grpc = m.group(1) if m else grpc
                m = re.search(r"web UI: http://([^/]+)/", line)
                if m:
                    gw = m.group(1)
                    break
            self.assertTrue(grpc and gw, "agentzd did not start (exit %s)" % proc.poll())

            def check(kind, **e):
                return run(["sh", script, kind], env=dict(os.environ, **e)).returncode

            self.assertEqual(check("grpc", AGENTZ_GRPC_LISTEN=grpc), 0)
            self.assertEqual(check("http", AGENTZ_GATEWAY_LISTEN=gw), 0)
            with socket.socket() as sock:  # a port nobody listens on
                sock.bind(("127.0.0.1", 0))
                closed = "127.0.0.1:%d" % sock.getsockname()[1]
            self.assertEqual(check("grpc", AGENTZ_GRPC_LISTEN=closed), 1)
            self.assertEqual(check("http", AGENTZ_GATEWAY_LISTEN=closed), 7)  # curl: cannot connect
            # the gateway's port speaks HTTP/1.1 and h2c, but no gRPC health: not SERVING
            self.assertEqual(check("grpc", AGENTZ_GRPC_LISTEN=gw), 1)
            self.assertEqual(check("nonsense"), 2)
        finally:
            proc.terminate()
            rc = proc.wait(timeout=60)
            reader.join(timeout=10)
            proc.stdout.close()
        self.assertEqual(rc, 0)
        say("healthcheck: the image's agentz-healthcheck says SERVING for a real agentzd (gRPC) and "
            "its gateway (/readyz), and fails for closed ports")


# ------------------------------------------------------------------ grafana

class Dashboard(unittest.TestCase):
    def test_dashboard(self):
        d = json.loads(read(DASHBOARD))
        variables = {v["name"]: v for v in d["templating"]["list"]}
        self.assertEqual(variables["datasource"]["type"], "datasource")
        self.assertEqual(variables["datasource"]["query"], "prometheus")
        used, exprs = set(), 0
        titles = []
        for p in d["panels"]:
            if p["type"] == "row":
                continue
            titles.append(p["title"])
            self.assertEqual(p["datasource"]["uid"], "${datasource}", p["title"])
            self.assertTrue(p["targets"], p["title"])
            for t in p["targets"]:
                exprs += 1
                self.assertEqual(t["expr"].count("("), t["expr"].count(")"), t["expr"])
                names = set(re.findall(r"\b((?:agentz|process)_[a-z0-9_]+)", t["expr"]))
                self.assertTrue(names, t["expr"])
                for n in names:
                    base = re.sub(r"_(bucket|sum|count)$", "", n)
                    self.assertIn(base, METRICS, "%s: %s is not a metric of the contract" % (p["title"], n))
                    if n != base:
                        self.assertIn("_seconds", base, "%s: only histograms have %s" % (p["title"], n))
                    used.add(base)
        self.assertEqual(sorted(METRICS - used), [], "contract metrics without a panel")
        self.assertEqual(len(titles), len(set(titles)))
        say("grafana: %d panels, %d queries, every metric of the contract and nothing else" % (len(titles), exprs))


if __name__ == "__main__":
    unittest.main()
