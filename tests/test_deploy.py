"""The deployment files in deploy/ are valid, and agree with the Dockerfile and pyproject.toml.

- Core Kubernetes objects (Service, StatefulSet, PersistentVolumeClaim, …) are validated with
  kubernetes-validate against the Kubernetes OpenAPI schemas of K8S_VERSIONS, strict (unknown fields
  are errors, as with `kubectl apply --validate=strict`).
- KubeRay's RayCluster and RayJob are validated against the `openAPIV3Schema` of the served CRD
  version in deploy/kuberay/crds/ (KubeRay's own CRDs, vendored byte for byte; sha256 pinned in its
  README), with unknown fields rejected the way the API server's strict field validation does, and
  the pod templates inside them are validated as Kubernetes PodTemplates too.
- Every longwatch image named in deploy/ is the image deploy/Dockerfile builds (name and tag from its
  documented `docker build … -t NAME:TAG` line; the tag is pyproject's version). Other images must
  be listed in THIRD_PARTY_IMAGES.
- Each check is also run on deliberately broken copies, which it must reject.

Not covered: KubeRay's CEL rules (x-kubernetes-validations) and the operator's own Go-side checks.
"""

from __future__ import annotations

import copy
import hashlib
import re
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KUBERAY = DEPLOY / "kuberay"
CRDS = KUBERAY / "crds"
MANIFESTS = ("redis.yaml", "raycluster.yaml", "job.yaml")

# Kubernetes versions whose schemas kubernetes-validate ships (see the package's kubernetes-json-schema/).
K8S_VERSIONS = ("1.30.0", "1.37.0")
# Images that are not built from this repository, by exact reference.
THIRD_PARTY_IMAGES = {"redis:7.2"}
# Images built FROM the Dockerfile's image by another Dockerfile of deploy/ (Dockerfile.gpu adds
# torch and transformers for the GPU group); they carry the same registry and tag.
DERIVED_IMAGES = {"longwatch-gpu": "Dockerfile.gpu"}
IMAGE_KEYS = {"image", "head_image", "worker_image"}  # Kubernetes containers; Ray launcher's `docker:`

Doc = dict[str, Any]


# --- loading ---------------------------------------------------------------------------------------


@cache
def _manifest_docs(name: str) -> tuple[Doc, ...]:
    with open(KUBERAY / name) as f:
        return tuple(d for d in yaml.safe_load_all(f) if d)


def manifest_docs(name: str) -> list[Doc]:
    return copy.deepcopy(list(_manifest_docs(name)))


def find_doc(name: str, kind: str) -> Doc:
    """The first document of that kind in the manifest (a copy)."""
    return next(d for d in manifest_docs(name) if d["kind"] == kind)


@cache
def crds() -> dict[str, Doc]:
    out = {}
    for path in sorted(CRDS.glob("*.yaml")):
        with open(path) as f:
            crd = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        out[f"{crd['spec']['group']}/{crd['spec']['names']['kind']}"] = crd
    return out


def _forbid_unknown_fields(schema: Any) -> Any:
    """Structural schema -> same schema where objects with declared properties reject other keys.

    The API server prunes (or, under strict field validation, rejects) fields a CRD does not declare;
    plain JSON Schema would accept them silently. Objects marked x-kubernetes-preserve-unknown-fields
    or with their own additionalProperties (maps) are left open.
    """
    if isinstance(schema, list):
        return [_forbid_unknown_fields(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _forbid_unknown_fields(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def cr_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    group, version = api_version.split("/")
    crd = crds()[f"{group}/{kind}"]
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    schema = _forbid_unknown_fields(served["schema"]["openAPIV3Schema"])
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    cls.check_schema(schema)
    return cls(schema)


# --- checks: each returns a list of problems, empty when the document is fine ----------------------


def _where(err: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in err.absolute_path) or "<root>"


def k8s_problems(doc: Doc, k8s_version: str) -> list[str]:
    try:
        kubernetes_validate.validate(doc, k8s_version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{doc['kind']} (Kubernetes {e.version}) {_where(e)}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [e.message]
    return []


def pod_templates(doc: Doc) -> list[tuple[str, Doc]]:
    """The PodTemplateSpecs inside a KubeRay custom resource, with where they are."""
    spec = doc.get("spec", {})
    found = []
    clusters = [("spec", spec)] if doc["kind"] == "RayCluster" else []
    if doc["kind"] == "RayJob":
        if "rayClusterSpec" in spec:
            clusters.append(("spec.rayClusterSpec", spec["rayClusterSpec"]))
        if "submitterPodTemplate" in spec:
            found.append(("spec.submitterPodTemplate", spec["submitterPodTemplate"]))
    for where, cluster in clusters:
        if "template" in cluster.get("headGroupSpec", {}):
            found.append((f"{where}.headGroupSpec.template", cluster["headGroupSpec"]["template"]))
        for i, group in enumerate(cluster.get("workerGroupSpecs", [])):
            if "template" in group:
                found.append((f"{where}.workerGroupSpecs.{i}.template", group["template"]))
    return found


def cr_problems(doc: Doc, k8s_version: str) -> list[str]:
    validator = cr_validator(doc["apiVersion"], doc["kind"])
    problems = [f"{doc['kind']} {_where(e)}: {e.message}" for e in validator.iter_errors(doc)]
    # The CRD leaves the CR's own metadata open (the API server checks it as ObjectMeta), and its copy
    # of the pod spec is KubeRay's build of k8s.io/api: check both against Kubernetes' schemas too.
    as_configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc.get("metadata", {})}
    problems += [f"metadata: {p}" for p in k8s_problems(as_configmap, k8s_version)]
    for where, template in pod_templates(doc):
        wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}
        problems += [f"{where}: {p}" for p in k8s_problems(wrapped, k8s_version)]
    return problems


def problems(doc: Doc, k8s_version: str = K8S_VERSIONS[-1]) -> list[str]:
    if f"{doc['apiVersion'].split('/')[0]}/{doc['kind']}" in crds():
        return cr_problems(doc, k8s_version)
    return k8s_problems(doc, k8s_version)


@cache
def dockerfile_image() -> tuple[str, str]:
    """(name, tag) from the Dockerfile's documented build command; the tag must be pyproject's version."""
    text = (DEPLOY / "Dockerfile").read_text()
    (ref,) = re.findall(r"docker build -f deploy/Dockerfile -t (\S+) \.", text)
    name, tag = ref.rsplit(":", 1)
    return name, tag


def image_refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k in IMAGE_KEYS and isinstance(v, str)] + [
            ref for k, v in node.items() if k not in IMAGE_KEYS for ref in image_refs(v)
        ]
    if isinstance(node, list):
        return [ref for v in node for ref in image_refs(v)]
    return []


def split_image(ref: str) -> tuple[str, str, str]:
    """'reg.io:5000/team/longwatch:0.1.0' -> ('reg.io:5000/team', 'longwatch', '0.1.0')."""
    path, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "")
    registry, _, name = path.rpartition("/")
    return registry, name, tag


def image_problems(refs: list[str]) -> list[str]:
    name, tag = dockerfile_image()
    out, registries = [], set()
    for ref in refs:
        if ref in THIRD_PARTY_IMAGES:
            continue
        registry, repo, ref_tag = split_image(ref)
        if repo != name and repo not in DERIVED_IMAGES:
            out.append(f"{ref}: neither the Dockerfile's image ({name}) nor in THIRD_PARTY_IMAGES")
            continue
        if ref_tag != tag:
            out.append(f"{ref}: tag {ref_tag or '(none)'} is not the Dockerfile's {tag}")
        registries.add(registry)
    if len(registries) > 1:
        out.append(f"longwatch images come from several registries: {sorted(registries)}")
    return out


# --- the deploy files -------------------------------------------------------------------------------


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
@pytest.mark.parametrize("manifest", MANIFESTS)
def test_manifest_is_valid(manifest, k8s_version):
    docs = manifest_docs(manifest)
    assert docs
    for doc in docs:
        assert problems(doc, k8s_version) == [], f"{manifest}: {doc['kind']} {doc['metadata']['name']}"


def test_every_kind_is_checked():
    """No document falls through: each kind has a Kubernetes schema or a vendored CRD."""
    kinds = {(d["apiVersion"], d["kind"]) for m in MANIFESTS for d in manifest_docs(m)}
    assert {k for _, k in kinds} >= {"RayCluster", "RayJob", "Service", "StatefulSet", "PersistentVolumeClaim"}
    for api_version, kind in kinds:
        doc = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}}
        assert not any("Couldn't find schema" in p for p in problems(doc)), kind
    assert any("Couldn't find schema" in p for p in problems({"apiVersion": "apps/v1", "kind": "Deploymnt"}))


def test_vendored_crds_are_upstreams():
    readme = (CRDS / "README.md").read_text()
    files = sorted(p.name for p in CRDS.iterdir() if p.name != "README.md")
    assert files == ["LICENSE", "ray.io_rayclusters.yaml", "ray.io_rayjobs.yaml"]
    for name in files:
        data = (CRDS / name).read_bytes()
        row = re.search(rf"\| `{re.escape(name)}` \| (\d+) \| `([0-9a-f]{{64}})` \|", readme)
        assert row, f"{name} is not listed in crds/README.md"
        assert (len(data), hashlib.sha256(data).hexdigest()) == (int(row[1]), row[2]), name
    assert "Apache License" in (CRDS / "LICENSE").read_text()
    for kind in ("RayCluster", "RayJob"):
        crd = crds()[f"ray.io/{kind}"]
        assert crd["kind"] == "CustomResourceDefinition"
        assert [v["name"] for v in crd["spec"]["versions"] if v.get("storage")] == ["v1"]


def test_dockerfile_tag_is_the_project_version():
    name, tag = dockerfile_image()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert (name, tag) == (project["name"], project["version"])


def test_derived_images_are_built_from_the_base_image():
    name, tag = dockerfile_image()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for image, dockerfile in DERIVED_IMAGES.items():
        text = (DEPLOY / dockerfile).read_text()
        assert re.findall(rf"docker build -f deploy/{re.escape(dockerfile)} -t (\S+) \.", text) == [f"{image}:{tag}"]
        assert re.findall(r"^ARG BASE_IMAGE=(\S+)$", text, re.M) == [f"{name}:{tag}"]
        assert re.findall(r"^FROM (\S+)", text, re.M) == ["${BASE_IMAGE}"]
        # what it installs is the project's `vlm` extra, pinned the same way
        assert sorted(re.findall(r'"([a-z][\w-]*[<>=!]=?[\w.]+)"', text)) == sorted(
            project["optional-dependencies"]["vlm"]
        )


def test_images_are_the_dockerfiles():
    docs = [d for m in MANIFESTS for d in manifest_docs(m)]
    launcher = yaml.safe_load((DEPLOY / "ray-cluster.yaml").read_text())
    refs = image_refs(docs) + image_refs(launcher)
    name, tag = dockerfile_image()
    assert any(split_image(r)[1:] == (name, tag) for r in image_refs(launcher)), "ray-cluster.yaml names no image"
    assert sum(split_image(r)[1:] == (name, tag) for r in image_refs(docs)) >= 2  # head + cpu workers
    assert image_problems(refs) == []


def test_image_mentions_in_comments_and_docs_use_the_tag():
    """Commented-out images and docs (`FROM longwatch:…`, `docker push …`) go stale silently otherwise."""
    name, tag = dockerfile_image()
    names = "|".join(re.escape(n) for n in (name, *DERIVED_IMAGES))
    files = [*DEPLOY.glob("*.yaml"), *KUBERAY.glob("*.yaml"), *DEPLOY.glob("Dockerfile*"), DEPLOY / "README.md"]
    mentions = [
        (f.name, m[0])
        for f in files
        for m in re.finditer(rf"(?<![\w.-])(?:[\w.-]+(?::\d+)?/)*(?:{names}):([\w][\w.-]*)", f.read_text())
    ]
    assert len(mentions) >= 8
    assert [mention for mention in mentions if not mention[1].endswith(f":{tag}")] == []


def test_ray_version_matches_the_pin():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d.split("==")[1] for d in deps if d.startswith("ray[")]
    assert find_doc("raycluster.yaml", "RayCluster")["spec"]["rayVersion"] == pin


# --- the checks reject broken copies ---------------------------------------------------------------


_DELETE = object()

# (manifest, kind, path to change, new value or _DELETE, a fragment the problems must contain)
BROKEN = [
    ("redis.yaml", "StatefulSet", ("spec", "replicas"), "one", "spec.replicas"),
    ("redis.yaml", "StatefulSet", ("spec", "selector"), _DELETE, "'selector' is a required property"),
    (
        "redis.yaml",
        "StatefulSet",
        ("spec", "template", "spec", "containers", 0, "imagePullPolicyy"),
        "Always",
        "imagePullPolicyy",
    ),
    ("redis.yaml", "Service", ("spec", "ports", 0, "port"), _DELETE, "'port' is a required property"),
    ("raycluster.yaml", "PersistentVolumeClaim", ("spec", "accessModes"), "ReadWriteMany", "spec.accessModes"),
    (
        "raycluster.yaml",
        "RayCluster",
        ("spec", "workerGroupSpecs", 0, "replicas"),
        "two",
        "workerGroupSpecs.0.replicas",
    ),
    (
        "raycluster.yaml",
        "RayCluster",
        ("spec", "workerGroupSpecs", 0, "groupName"),
        _DELETE,
        "'groupName' is a required",
    ),
    ("raycluster.yaml", "RayCluster", ("spec", "headGroupSpec", "template"), _DELETE, "'template' is a required"),
    ("raycluster.yaml", "RayCluster", ("spec", "rayVerison"), "2.60.0", "'rayVerison' was unexpected"),
    ("raycluster.yaml", "RayCluster", ("spec", "headGroupSpec", "rayStartParams", "num-cpus"), 0, "num-cpus"),
    (
        "raycluster.yaml",
        "RayCluster",
        ("spec", "headGroupSpec", "template", "spec", "containers", 0, "env", 0, "value"),
        6379,
        "env.0.value",
    ),
    (
        "raycluster.yaml",
        "RayCluster",
        ("spec", "headGroupSpec", "template", "spec", "containers", 0, "imagee"),
        "x",
        "'imagee' was unexpected",
    ),
    ("raycluster.yaml", "RayCluster", ("metadata", "labels", "app.kubernetes.io/name"), 1, "metadata"),
    ("job.yaml", "RayJob", ("spec", "submitterConfig", "backoffLimit"), "2", "submitterConfig.backoffLimit"),
    ("job.yaml", "RayJob", ("spec", "entrypoint"), ["longwatch", "run"], "spec.entrypoint"),
    ("job.yaml", "RayJob", ("spec", "submiterConfig"), {"backoffLimit": 2}, "'submiterConfig' was unexpected"),
]


@pytest.mark.parametrize(
    ("manifest", "kind", "path", "value", "expected"),
    BROKEN,
    ids=[f"{b[1]}:{'.'.join(map(str, b[2]))}" for b in BROKEN],
)
def test_broken_copy_is_rejected(manifest, kind, path, value, expected):
    doc = find_doc(manifest, kind)
    assert problems(doc) == []
    *parents, last = path
    node = doc
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    found = problems(doc)
    assert found, f"{kind} with {path} = {value!r} passed"
    assert any(expected in p for p in found), found


def test_pod_templates_are_checked_against_kubernetes():
    """The RayCluster's three pod templates go through the PodTemplate check, which rejects bad ones on its own."""
    doc = find_doc("raycluster.yaml", "RayCluster")
    templates = dict(pod_templates(doc))
    assert list(templates) == [
        "spec.headGroupSpec.template",
        "spec.workerGroupSpecs.0.template",
        "spec.workerGroupSpecs.1.template",
    ]
    bad = templates["spec.workerGroupSpecs.1.template"]
    bad["spec"]["containers"][0]["resources"]["limits"] = ["8"]
    wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": bad}
    assert k8s_problems(wrapped, K8S_VERSIONS[-1]) != []
    assert any(p.startswith("spec.workerGroupSpecs.1.template: ") for p in problems(doc))


@pytest.mark.parametrize(
    "ref",
    [
        "registry.example.com/longwatch:0.0.9",  # stale tag
        "registry.example.com/longwatch",  # no tag (":latest")
        "registry.example.com/longwatch-gpu:latest",
        "nginx:1.27",  # third-party image nobody listed
        "redis:7.4",  # a listed third-party image, other version
    ],
)
def test_wrong_image_is_rejected(ref):
    docs = manifest_docs("raycluster.yaml")
    (cluster,) = [d for d in docs if d["kind"] == "RayCluster"]
    cluster["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["image"] = ref
    assert image_problems(image_refs(docs)) != []


def test_images_from_two_registries_are_rejected():
    name, tag = dockerfile_image()
    assert image_problems([f"a.example/{name}:{tag}", f"b.example/{name}:{tag}"]) != []
    assert image_problems([f"a.example/{name}:{tag}", f"a.example/longwatch-gpu:{tag}", "redis:7.2"]) == []
