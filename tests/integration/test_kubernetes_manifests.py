"""deploy/kubernetes/: every object is valid for the Kubernetes API (its own OpenAPI schema,
strict, no cluster: see kubernetes_schema.py), and broken copies are refused; the ConfigMap's
holdfast.yaml passes the real binary's `--check`; and what the Deployment and holdfast's
config must agree on does: grace period > preStop sleep + drain_timeout, probes on the admin
port, the config mounted as a directory, the upstream named by the headless Service.

Nothing here is skipped: without the schema (scripts/setup) or the binary, the test fails."""

import copy
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import kubernetes_schema as ks  # noqa: E402

DEPLOY = os.path.join(h.REPO, "deploy", "kubernetes")
KUSTOMIZATION = "kustomization.yaml"
CLUSTER_DOMAIN = "svc.cluster.local"


def load_file(path):
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def manifest_files():
    files = sorted(glob.glob(os.path.join(DEPLOY, "*.yaml")))
    assert files, f"no manifests in {DEPLOY}"
    return [f for f in files if os.path.basename(f) != KUSTOMIZATION]


def file_errors(validator, path):
    """Every schema error of every object in one manifest file, as 'FILE: kind/name: path: msg'."""
    out = []
    docs = load_file(path)
    if not docs:
        out.append(f"{path}: no object")
    for doc in docs:
        name = (doc.get("metadata") or {}).get("name") if isinstance(doc, dict) else None
        kind = doc.get("kind") if isinstance(doc, dict) else None
        out += [f"{os.path.basename(path)}: {kind}/{name}: {e}" for e in validator.errors(doc)]
    return out


def objects():
    return [doc for f in manifest_files() for doc in load_file(f)]


def the(kind, pred=lambda o: True):
    found = [o for o in objects() if o.get("kind") == kind and pred(o)]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container_of(deployment):
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one holdfast container per pod"
    return containers[0]


def config_path_of(container):
    args = container.get("args", [])
    assert "-c" in args, "the container names its config file with -c"
    return args[args.index("-c") + 1]


def duration_seconds(text):
    """holdfast's duration syntax (src/duration.cpp): a whole number and ms|s|m|h."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", str(text))
    assert m, f"{text!r} is not a holdfast duration"
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def prestop_seconds(container):
    pre = container["lifecycle"]["preStop"]
    if "sleep" in pre:
        return pre["sleep"]["seconds"]
    cmd = pre["exec"]["command"]
    assert os.path.basename(cmd[0]) == "sleep" and len(cmd) == 2, f"preStop is not a sleep: {cmd}"
    return int(cmd[1])


def shutdown_problems(deployment, config):
    """The kubelet kills the pod terminationGracePeriodSeconds after it starts stopping it,
    preStop included: the grace period must cover the sleep and the whole drain."""
    spec = deployment["spec"]["template"]["spec"]
    grace = spec.get("terminationGracePeriodSeconds", 30)
    sleep = prestop_seconds(container_of(deployment))
    drain = duration_seconds(config.get("drain_timeout", "10s"))
    if grace > sleep + drain:
        return []
    return [f"terminationGracePeriodSeconds {grace} <= preStop {sleep}s + drain_timeout {drain}s"]


def probe_problems(deployment, config):
    c = container_of(deployment)
    admin_port = port_of(config["admin"]["listen"])
    named = {p["name"]: p["containerPort"] for p in c.get("ports", []) if "name" in p}
    out = []
    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/live")):
        get = c.get(probe, {}).get("httpGet")
        if not get:
            out.append(f"{probe}: no httpGet")
            continue
        port = named.get(get["port"]) if isinstance(get["port"], str) else get["port"]
        if port != admin_port:
            out.append(f"{probe}: port {get['port']!r} is not the admin port {admin_port}")
        if get.get("path") != path:
            out.append(f"{probe}: path {get.get('path')!r}, expected {path}")
    return out


class SchemaTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.validator = ks.load_validator()

    def test_every_object_is_valid(self):
        for path in manifest_files():
            with self.subTest(file=os.path.basename(path)):
                self.assertEqual(file_errors(self.validator, path), [])
        print(f"{len(manifest_files())} files valid for Kubernetes {self.validator.version}", file=sys.stderr)

    def test_broken_copies_are_refused(self):
        deployment = the("Deployment")
        broken = [
            ("replicas of the wrong type", "spec.replicas: 'two' is not of type 'integer'",
             lambda d: d["spec"].__setitem__("replicas", "two")),
            ("an unknown field in the container", "('livenessprobe' was unexpected)",
             lambda d: container_of(d).__setitem__("livenessprobe", container_of(d)["livenessProbe"])),
            ("no selector", "spec: 'selector' is a required property",
             lambda d: d["spec"].pop("selector")),
            ("a kind that does not exist", "is no object of Kubernetes",
             lambda d: d.__setitem__("kind", "Deploymnet")),
        ]
        tmp = tempfile.mkdtemp(prefix="holdfast-k8s-")
        try:
            for what, expected, mutate in broken:
                with self.subTest(broken=what):
                    copy_ = copy.deepcopy(deployment)
                    mutate(copy_)
                    path = os.path.join(tmp, "deployment.yaml")
                    with open(path, "w") as f:
                        yaml.safe_dump(copy_, f)
                    errors = file_errors(self.validator, path)
                    self.assertEqual(len(errors), 1, errors)
                    self.assertIn(expected, errors[0])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_kustomization_lists_every_manifest(self):
        (k,) = load_file(os.path.join(DEPLOY, KUSTOMIZATION))
        self.assertEqual(k["kind"], "Kustomization")
        self.assertEqual(sorted(k["resources"]), [os.path.basename(f) for f in manifest_files()])
        # A generated ConfigMap name changes with its content and rolls the Deployment
        # instead of letting holdfast reload.
        self.assertNotIn("configMapGenerator", k)


class ConfigTest(unittest.TestCase):

    def setUp(self):
        self.configmap = the("ConfigMap")
        self.deployment = the("Deployment")
        self.path = config_path_of(container_of(self.deployment))
        self.text = self.configmap["data"][os.path.basename(self.path)]
        self.config = yaml.safe_load(self.text)
        self.tmp = tempfile.mkdtemp(prefix="holdfast-k8s-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def check(self, text):
        path = os.path.join(self.tmp, "holdfast.yaml")
        with open(path, "w") as f:
            f.write(text)
        self.assertTrue(os.access(h.HOLDFAST_BIN, os.X_OK), f"{h.HOLDFAST_BIN} is not built")
        return subprocess.run([h.HOLDFAST_BIN, "--check", "-c", path], capture_output=True, text=True, timeout=30)

    def test_configmap_config_passes_check(self):
        p = self.check(self.text)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("is valid", p.stderr)

    def test_check_refuses_a_broken_config(self):
        p = self.check(self.text.replace("drain_timeout: ", "drain_timeout: soon #"))
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("drain_timeout", p.stderr)

    def test_reload_admin_and_headless_upstream(self):
        self.assertIs(self.config.get("reload_on_change"), True)
        self.assertEqual(self.config["admin"]["listen"], "0.0.0.0:9901")
        headless = the("Service", lambda s: s["spec"].get("clusterIP") == "None")
        name = headless["metadata"]["name"]
        namespace = headless["metadata"].get("namespace", "default")
        fqdn = f"{name}.{namespace}.{CLUSTER_DOMAIN}"
        ports = {p["port"] for p in headless["spec"]["ports"]}
        servers = [s["address"] for u in self.config["upstreams"].values() for s in u["servers"]]
        self.assertTrue(any(a.rsplit(":", 1)[0] == fqdn and port_of(a) in ports for a in servers),
                        f"no upstream server is {fqdn}:{sorted(ports)}: {servers}")


class DeploymentTest(unittest.TestCase):

    def setUp(self):
        self.deployment = the("Deployment")
        self.container = container_of(self.deployment)
        self.pod = self.deployment["spec"]["template"]
        configmap = the("ConfigMap")
        self.config = yaml.safe_load(configmap["data"][os.path.basename(config_path_of(self.container))])
        self.configmap_name = configmap["metadata"]["name"]

    def test_grace_period_covers_prestop_and_drain(self):
        self.assertEqual(shutdown_problems(self.deployment, self.config), [])
        # and the check itself can fail
        short = copy.deepcopy(self.deployment)
        short["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 25
        self.assertEqual(len(shutdown_problems(short, self.config)), 1)

    def test_probes_on_admin_port(self):
        self.assertEqual(probe_problems(self.deployment, self.config), [])
        wrong = copy.deepcopy(self.deployment)
        container_of(wrong)["livenessProbe"]["httpGet"]["port"] = "http"
        self.assertEqual(len(probe_problems(wrong, self.config)), 1)

    def test_config_mounted_as_directory(self):
        path = config_path_of(self.container)
        volumes = {v["name"]: v for v in self.pod["spec"]["volumes"]}
        mounts = [m for m in self.container["volumeMounts"] if volumes[m["name"]].get("configMap")]
        self.assertEqual(len(mounts), 1)
        (mount,) = mounts
        # subPath mounts never see a ConfigMap update: reload_on_change would never fire.
        self.assertNotIn("subPath", mount)
        self.assertEqual(mount["mountPath"], os.path.dirname(path))
        self.assertEqual(volumes[mount["name"]]["configMap"]["name"], self.configmap_name)

    def test_ports_and_selectors_agree(self):
        named = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        self.assertEqual(named["http"], port_of(self.config["listen"][0]))
        labels = self.pod["metadata"]["labels"]
        self.assertLessEqual(self.deployment["spec"]["selector"]["matchLabels"].items(), labels.items())
        service = the("Service", lambda s: s["spec"].get("clusterIP") != "None")
        self.assertLessEqual(service["spec"]["selector"].items(), labels.items())
        for port in service["spec"]["ports"]:
            target = port["targetPort"]
            self.assertEqual(named.get(target) if isinstance(target, str) else target, named["http"])

    def test_non_root_with_limits(self):
        pod_security = self.pod["spec"]["securityContext"]
        self.assertIs(pod_security["runAsNonRoot"], True)
        self.assertGreater(pod_security["runAsUser"], 0)
        self.assertIs(self.container["securityContext"]["allowPrivilegeEscalation"], False)
        for kind in ("requests", "limits"):
            self.assertEqual(set(self.container["resources"][kind]), {"cpu", "memory"})


if __name__ == "__main__":
    unittest.main()
