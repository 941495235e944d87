#!/usr/bin/env python3
"""Offline checks of the Kubernetes manifests in deploy/kubernetes/, without a cluster.

1. Every resource against the Kubernetes API's own schemas, strictly (an unknown field is an
   error), for the oldest and newest Kubernetes versions named below: `kubernetes-validate`
   (`pip install kubernetes-validate`), which ships those schemas. An MPIJob (a custom
   resource of the Kubeflow MPI Operator, which those schemas do not know) is checked against
   deploy/schemas/mpijob-v2beta1.schema.json, and each of its pod templates, wrapped in a
   PodTemplate, against Kubernetes' schemas as above.
2. Against mtrec itself: every `--flag` a container (or a service of docker-compose.yml)
   passes to `mtrec <command>` (also through `mpirun`) is one that command's `--help` lists; probe paths are routes of
   schemas/openapi.json; claims, Service selectors, autoscaler and disruption-budget targets
   name resources the manifests define.

Usage: deploy/validate.py [MTREC_BINARY] (default: $CARGO_TARGET_DIR/release/mtrec). Exits 1 and
names file, resource and field on the first kind of failure it finds.
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

import jsonschema
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
# The oldest Kubernetes release still commonly run and the newest the validator knows.
KUBERNETES_VERSIONS = ["1.29.0", "1.37.0"]


def fail(message):
    print(f"deploy/validate.py: {message}", file=sys.stderr)
    sys.exit(1)


MPIJOB_SCHEMA = ROOT / "deploy" / "schemas" / "mpijob-v2beta1.schema.json"


def kubernetes_check(files, what):
    for version in KUBERNETES_VERSIONS:
        command = [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", version]
        result = subprocess.run(command + [str(f) for f in files], capture_output=True, text=True)
        if result.returncode != 0:
            fail(f"{what}, Kubernetes {version} schemas:\n{result.stdout}{result.stderr}")


def schema_check():
    """Built-in kinds against Kubernetes' schemas; MPIJobs against theirs, pod templates within."""
    builtin, templates = [], []
    for path, doc in documents():
        if doc.get("kind") != "MPIJob":
            builtin.append(doc)
            continue
        where = f"{path}: MPIJob/{doc['metadata']['name']}"
        errors = sorted(jsonschema.Draft202012Validator(json.loads(MPIJOB_SCHEMA.read_text())).iter_errors(doc), key=str)
        if errors:
            fail(f"{where}: {'/'.join(map(str, errors[0].absolute_path))}: {errors[0].message}")
        for replica, spec in doc["spec"]["mpiReplicaSpecs"].items():
            name = f"{doc['metadata']['name']}-{replica.lower()}"
            templates.append({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": spec["template"]})
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for name, docs in (("builtin.yaml", builtin), ("mpijob-pod-templates.yaml", templates)):
            if docs:
                files.append(pathlib.Path(tmp) / name)
                files[-1].write_text(yaml.safe_dump_all(docs))
        kubernetes_check(files, "deploy/kubernetes")


def documents():
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path.relative_to(ROOT), doc


def pod_specs(doc):
    """The pod templates of a Deployment, a Job or an MPIJob."""
    kind = doc["kind"]
    if kind in ("Deployment", "Job"):
        yield doc["spec"]["template"]["spec"], doc["spec"]["template"]["metadata"].get("labels", {})
    if kind == "MPIJob":
        for spec in doc["spec"]["mpiReplicaSpecs"].values():
            yield spec["template"]["spec"], spec["template"].get("metadata", {}).get("labels", {})


def mtrec_args(container):
    """The arguments a container gives mtrec: the image's entrypoint's, or those of the mtrec
    program an `mpirun` command starts; None when it runs something else."""
    args = container.get("args", [])
    if container.get("command") == ["mpirun"]:
        at = next((i for i, a in enumerate(args) if a.split("/")[-1] == "mtrec"), None)
        return None if at is None else args[at + 1 :]
    if container.get("command") or not container["image"].split("/")[-1].startswith("mtrec"):
        return None
    return args


def check_flags(binary, helps, where, args):
    """Fails unless `mtrec <command>` exists and has every `--flag` in `args`."""
    # The command path: the leading words before the first flag (`gen synthetic`).
    words = next((i for i, a in enumerate(args) if a.startswith("-")), len(args))
    command = " ".join(args[:words])
    if command not in helps:
        result = subprocess.run([binary, *args[:words], "--help"], capture_output=True, text=True)
        if result.returncode != 0:
            fail(f"{where}: `mtrec {command}` is not a command: {result.stderr.strip()}")
        helps[command] = result.stdout
    for arg in args[words:]:
        flag = arg.split("=", 1)[0]
        if flag.startswith("--") and f"{flag} " not in helps[command] and f"{flag}\n" not in helps[command]:
            fail(f"{where}: `mtrec {command}` has no flag {flag}")


def compose_check(binary):
    """docker-compose.yml parses, and every service running mtrec (itself, or under mpirun)
    passes flags its command has."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    helps = {}
    for name, service in compose["services"].items():
        command = service.get("command", [])
        image = service.get("image", "").split("/")[-1]
        if command[:1] == ["mpirun"]:
            container = {"command": ["mpirun"], "args": command[1:], "image": image}
        else:
            container = {"args": command, "image": image}
        args = mtrec_args(container)
        if args:
            check_flags(binary, helps, f"docker-compose.yml: service {name!r}", args)


def mtrec_check(binary):
    routes = set(json.loads((ROOT / "schemas" / "openapi.json").read_text())["paths"])
    docs = list(documents())
    names = {(doc["kind"], doc["metadata"]["name"]) for _, doc in docs}
    helps = {}
    for path, doc in docs:
        where = f"{path}: {doc['kind']}/{doc['metadata']['name']}"
        for spec, _ in pod_specs(doc):
            for volume in spec.get("volumes", []):
                claim = volume.get("persistentVolumeClaim", {}).get("claimName")
                if claim and ("PersistentVolumeClaim", claim) not in names:
                    fail(f"{where}: volume {volume['name']!r} claims {claim!r}, which no manifest defines")
            for container in spec.get("initContainers", []) + spec["containers"]:
                args = mtrec_args(container)
                if args:
                    check_flags(binary, helps, f"{where}: container {container['name']!r}", args)
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    route = container.get(probe, {}).get("httpGet", {}).get("path")
                    if route and route not in routes:
                        fail(f"{where}: {probe} path {route} is not a route of schemas/openapi.json")
    deployments = {doc["metadata"]["name"]: doc for _, doc in docs if doc["kind"] == "Deployment"}
    for path, doc in docs:
        where = f"{path}: {doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "Service" or doc["kind"] == "PodDisruptionBudget":
            selector = doc["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            if not any(
                selector.items() <= d["spec"]["template"]["metadata"]["labels"].items() for d in deployments.values()
            ):
                fail(f"{where}: selector {selector} matches no Deployment's pods")
        if doc["kind"] == "HorizontalPodAutoscaler":
            target = doc["spec"]["scaleTargetRef"]
            if target["kind"] != "Deployment" or target["name"] not in deployments:
                fail(f"{where}: scales {target['kind']}/{target['name']}, which no manifest defines")


def main():
    default = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", pathlib.Path.home() / ".cache" / "mtrec-target"))
    binary = sys.argv[1] if len(sys.argv) > 1 else str(default / "release" / "mtrec")
    if not pathlib.Path(binary).exists():
        fail(f"no mtrec binary at {binary}: build it (cargo build --release) or pass its path")
    schema_check()
    mtrec_check(binary)
    compose_check(binary)
    print(
        f"deploy/validate.py: {len(MANIFESTS)} manifest files valid for Kubernetes {', '.join(KUBERNETES_VERSIONS)} "
        "and mtrec; docker-compose.yml's mtrec flags too"
    )


if __name__ == "__main__":
    main()
