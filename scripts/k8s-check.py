#!/usr/bin/env python3
"""`make k8s-check`: the Kubernetes manifests in deploy/kubernetes, checked offline.

For the base and every overlay: render with `kubectl kustomize`; validate every object against
the Kubernetes API schemas (kubernetes-validate, strict: unknown fields are errors); then the
policy the design promises (docs/deploy.md) — no hostPath, no Docker socket, no privileges,
Pod Security "restricted" fields on every pod, runners in a RuntimeClass that the render ships,
in-memory work directories, selectors that match the labels they select, network policies that
deny by default and give the runners no egress, disruption budgets, an autoscaler on a metric
the service really exports (read from a running `unitforge serve`'s /metrics), and grace
periods longer than the drain. Exit 1 with every violation listed.

Usage: scripts/k8s-check.py KUBECTL UNITFORGE   (from the repository root)
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

K8S_VERSION = "1.37.0"
ROOT = Path("deploy/kubernetes")
RENDERS = [ROOT / "base", ROOT / "overlays" / "kata", ROOT / "overlays" / "keda"]
# Custom resources: no upstream schema to validate against; checked by the policy below.
CUSTOM_KINDS = {("keda.sh/v1alpha1", "ScaledObject")}


def render(kubectl: str, directory: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"{directory}: kubectl kustomize failed:\n{out.stderr}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def metric_names(unitforge: str) -> set[str]:
    """The metric families a real `unitforge serve` exports (local executor, no cache)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [unitforge, "serve", "--listen", f"127.0.0.1:{port}", "--executor", "local",
         "--workers", "1", "--no-cache"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("k8s-check: `unitforge serve` did not answer /metrics")
                time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=60)
    return set(re.findall(r"^# TYPE (\S+) ", text, flags=re.M))


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(name, pod template metadata, pod spec) of every workload."""
    found = []
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            template = obj["spec"]["template"]
            found.append((f"{obj['kind']}/{obj['metadata']['name']}", template["metadata"],
                          template["spec"]))
    return found


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def check(objects: list[dict[str, Any]], metrics: set[str], where: str) -> list[str]:
    problems: list[str] = []

    def fail(message: str) -> None:
        problems.append(f"{where}: {message}")

    by_kind: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
        key = (obj["apiVersion"], obj["kind"])
        if key in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            fail(f"{obj['kind']}/{obj['metadata']['name']} fails the {K8S_VERSION} schema: "
                 f"{str(err).splitlines()[0]}")
        except kubernetes_validate.SchemaNotFoundError:
            fail(f"no schema for {key}: not a Kubernetes {K8S_VERSION} kind")

    text = yaml.safe_dump_all(objects)
    if "docker.sock" in text or "/var/run/docker" in text:
        fail("something mounts or names the Docker socket")

    namespaces = by_kind.get("Namespace", [])
    if len(namespaces) != 1:
        fail("exactly one Namespace expected")
    else:
        labels = namespaces[0]["metadata"].get("labels", {})
        if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
            fail("the namespace does not enforce Pod Security 'restricted'")
    namespace = namespaces[0]["metadata"]["name"] if namespaces else None
    for obj in objects:
        scoped = obj["kind"] not in ("Namespace", "RuntimeClass")
        if scoped and obj["metadata"].get("namespace") != namespace:
            fail(f"{obj['kind']}/{obj['metadata']['name']} is not in namespace {namespace}")

    runtime_classes = {rc["metadata"]["name"] for rc in by_kind.get("RuntimeClass", [])}
    pods = pod_specs(objects)
    for name, meta, spec in pods:
        security = spec.get("securityContext", {})
        if spec.get("automountServiceAccountToken") is not False:
            fail(f"{name}: mounts a service-account token")
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(host):
                fail(f"{name}: {host}")
        if security.get("runAsNonRoot") is not True or security.get("runAsUser", 0) == 0:
            fail(f"{name}: may run as root")
        if security.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
            fail(f"{name}: no seccomp profile")
        for volume in spec.get("volumes", []):
            if "hostPath" in volume:
                fail(f"{name}: hostPath volume {volume['name']}")
        grace = spec.get("terminationGracePeriodSeconds", 30)
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            cname = f"{name} container {container['name']}"
            ctx = container.get("securityContext", {})
            if ctx.get("privileged"):
                fail(f"{cname}: privileged")
            if ctx.get("allowPrivilegeEscalation") is not False:
                fail(f"{cname}: allowPrivilegeEscalation is not false")
            if ctx.get("readOnlyRootFilesystem") is not True:
                fail(f"{cname}: writable root filesystem")
            if ctx.get("capabilities", {}).get("drop") != ["ALL"]:
                fail(f"{cname}: capabilities not dropped (drop: [ALL])")
            if ctx.get("capabilities", {}).get("add"):
                fail(f"{cname}: adds capabilities")
            limits = container.get("resources", {}).get("limits", {})
            if not {"cpu", "memory"} <= set(limits):
                fail(f"{cname}: no cpu and memory limits")
            args = container.get("args", [])
            if "--drain" in args:
                drain = float(args[args.index("--drain") + 1])
                pre_stop = container.get("lifecycle", {}).get("preStop", {})
                sleep = pre_stop.get("sleep", {}).get("seconds", 0)
                # The longest request: the clients' attempt timeout (600 s).
                if grace < sleep + drain + 600:
                    fail(f"{cname}: grace period {grace} s is shorter than preStop {sleep} s + "
                         f"drain {drain} s + the longest request (600 s)")
        if meta["labels"].get("app.kubernetes.io/component") == "runner":
            runtime = spec.get("runtimeClassName")
            if not runtime:
                fail(f"{name}: runner pods without a runtimeClassName")
            elif runtime not in runtime_classes:
                fail(f"{name}: RuntimeClass {runtime} is not shipped")
            mounts = {m["mountPath"]: m["name"] for c in spec["containers"]
                      for m in c.get("volumeMounts", [])}
            work = next((v for v in spec.get("volumes", []) if v["name"] == mounts.get("/work")),
                        None)
            if not work or work.get("emptyDir", {}).get("medium") != "Memory":
                fail(f"{name}: the work directory is not an in-memory emptyDir")
            if grace < 600:
                fail(f"{name}: grace period {grace} s is shorter than the longest lease (600 s)")

    workloads = {obj["metadata"]["name"]: obj for obj in objects
                 if obj["kind"] in ("Deployment", "StatefulSet")}
    for obj in workloads.values():
        selector = obj["spec"]["selector"]["matchLabels"]
        if not selects(selector, obj["spec"]["template"]["metadata"]["labels"]):
            fail(f"{obj['kind']}/{obj['metadata']['name']}: selector does not match its template")
    templates = [meta["labels"] for _, meta, _ in pods]

    def matches_a_pod(selector: dict[str, str]) -> bool:
        return any(selects(selector, labels) for labels in templates)

    for svc in by_kind.get("Service", []):
        if not matches_a_pod(svc["spec"].get("selector", {})):
            fail(f"Service/{svc['metadata']['name']}: selects no pod")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        if not matches_a_pod(pdb["spec"]["selector"]["matchLabels"]):
            fail(f"PodDisruptionBudget/{pdb['metadata']['name']}: selects no pod")
    budgeted = [pdb["spec"]["selector"]["matchLabels"]
                for pdb in by_kind.get("PodDisruptionBudget", [])]
    for _, meta, _ in pods:
        if not any(selects(sel, meta["labels"]) for sel in budgeted):
            fail(f"pods {meta['labels']} have no PodDisruptionBudget")

    policies = by_kind.get("NetworkPolicy", [])
    deny_all = [p for p in policies if p["spec"]["podSelector"] == {}
                and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
                and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    if not deny_all:
        fail("no default-deny NetworkPolicy (every pod, ingress and egress)")
    for policy in policies:
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        if selector and not matches_a_pod(selector):
            fail(f"NetworkPolicy/{policy['metadata']['name']}: selects no pod")
        for rule in policy["spec"].get("ingress", []) + policy["spec"].get("egress", []):
            for peer in rule.get("from", []) + rule.get("to", []):
                labels = peer.get("podSelector", {}).get("matchLabels")
                if labels and "namespaceSelector" not in peer and not matches_a_pod(labels):
                    fail(f"NetworkPolicy/{policy['metadata']['name']}: a peer selects no pod")
    for _, meta, _ in pods:
        if meta["labels"].get("app.kubernetes.io/component") != "runner":
            continue
        for policy in policies:
            selector = policy["spec"]["podSelector"].get("matchLabels", {})
            if selector and selects(selector, meta["labels"]) and policy["spec"].get("egress"):
                fail(f"NetworkPolicy/{policy['metadata']['name']} gives the runners egress")

    scalers = by_kind.get("HorizontalPodAutoscaler", []) + by_kind.get("ScaledObject", [])
    if len(scalers) != 1:
        fail(f"exactly one autoscaler expected, found {len(scalers)}")
    for scaler in scalers:
        target = scaler["spec"]["scaleTargetRef"]["name"]
        if target not in workloads:
            fail(f"{scaler['kind']}/{scaler['metadata']['name']}: scales {target}, not shipped")
        if scaler["kind"] == "HorizontalPodAutoscaler":
            used = [m[m["type"].lower()]["metric"]["name"] for m in scaler["spec"]["metrics"]
                    if m["type"] in ("External", "Pods", "Object")]
        else:
            used = [t["metadata"]["metricName"] for t in scaler["spec"]["triggers"]]
            used += [name for t in scaler["spec"]["triggers"]
                     for name in re.findall(r"(unitforge_\w+)", t["metadata"].get("query", ""))]
        if not used:
            fail(f"{scaler['kind']}/{scaler['metadata']['name']}: scales on no service metric")
        for name in used:
            if name not in metrics:
                fail(f"{scaler['kind']}/{scaler['metadata']['name']}: metric {name} is not "
                     f"exported by `unitforge serve` (/metrics has {sorted(metrics)})")
    return problems


def self_test(metrics: set[str]) -> None:
    """The check can fail: a privileged pod with a socket mount must be caught."""
    bad = yaml.safe_load_all(
        """
apiVersion: v1
kind: Namespace
metadata: {name: unitforge}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: bad, namespace: unitforge}
spec:
  selector: {matchLabels: {app: bad}}
  template:
    metadata: {labels: {app: other, app.kubernetes.io/component: runner}}
    spec:
      containers:
        - name: c
          image: x
          securityContext: {privileged: true}
          volumeMounts: [{name: sock, mountPath: /var/run/docker.sock}]
      volumes: [{name: sock, hostPath: {path: /var/run/docker.sock}}]
"""
    )
    problems = check([doc for doc in bad if doc], metrics, "self-test")
    expected = ["Docker socket", "restricted", "hostPath", "privileged", "runtimeClassName",
                "selector does not match", "service-account token", "default-deny"]
    missed = [e for e in expected if not any(e in p for p in problems)]
    if missed:
        raise SystemExit(f"k8s-check's own self-test missed: {missed}")


def main() -> int:
    kubectl, unitforge = sys.argv[1], sys.argv[2]
    metrics = metric_names(unitforge)
    self_test(metrics)
    problems: list[str] = []
    for directory in RENDERS:
        objects = render(kubectl, directory)
        problems += check(objects, metrics, str(directory))
        kinds = sorted({o["kind"] for o in objects})
        print(f"{directory}: {len(objects)} objects ({', '.join(kinds)})")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        print(f"k8s-check: {len(problems)} problems", file=sys.stderr)
        return 1
    print(f"k8s-check: {len(RENDERS)} renders valid against Kubernetes {K8S_VERSION} "
          "and the deployment policy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
