"""deploy/: Kubernetes manifests validated offline against a pinned Kubernetes schema, and
the BentoCloud config checked against BentoML's own deployment schema and service.py."""

from __future__ import annotations

import ast
import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import attrs
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES_DIR = ROOT / "deploy" / "kubernetes"
BENTOCLOUD_CONFIG = ROOT / "deploy" / "bentocloud.yaml"
KUBERNETES_VERSION = "1.33.0"  # a release current clusters run; bump with the manifests
BENTO_UID = 1034  # the `bentoml` user BentoML's generated Dockerfile creates


KUSTOMIZATION = KUBERNETES_DIR / "kustomization.yaml"  # kustomize's file, not a resource


def manifest_files() -> list[Path]:
    return sorted(path for path in KUBERNETES_DIR.glob("*.yaml") if path != KUSTOMIZATION)


def manifests() -> list[dict[str, Any]]:
    documents = []
    for path in manifest_files():
        documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def by_kind(kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in manifests() if doc["kind"] == kind]
    return found


def classifier_container() -> dict[str, Any]:
    container: dict[str, Any] = by_kind("Deployment")["spec"]["template"]["spec"]["containers"][0]
    return container


def quantity(value: str) -> float:
    """CPU or memory quantity in base units (cores, bytes)."""
    units = {"m": 1e-3, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    for suffix, factor in units.items():
        if str(value).endswith(suffix):
            return float(str(value)[: -len(suffix)]) * factor
    return float(value)


@pytest.mark.parametrize("document", manifests(), ids=lambda d: f"{d['kind']}")
def test_manifest_passes_strict_schema_validation(document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_strict_validation_rejects_a_misspelled_field() -> None:
    broken = copy.deepcopy(by_kind("Deployment"))
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kustomization_applies_every_manifest_and_names_the_image() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in manifest_files())
    image_names = {image["name"] for image in kustomization["images"]}
    assert image_names == {classifier_container()["image"].split(":")[0]}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_renders_the_three_resources_offline() -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(KUBERNETES_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(rendered) if doc)
    assert kinds == ["Deployment", "HorizontalPodAutoscaler", "Service"]


def test_probes_use_the_service_health_endpoints() -> None:
    container = classifier_container()
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    startup = container["startupProbe"]
    # A cold start (TensorFlow import, model load, warm-up) must fit in the startup budget.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": 3000}


def test_pod_runs_non_root_with_a_read_only_root_filesystem() -> None:
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    container = classifier_container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == BENTO_UID
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # BentoML creates its home folders at start-up: they must sit on a writable emptyDir.
    env = {item["name"]: item["value"] for item in container["env"]}
    writable = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert any(env["BENTOML_HOME"].startswith(path) for path in writable)
    assert all("emptyDir" in volume for volume in pod["volumes"])


def test_resource_requests_fit_within_limits() -> None:
    resources = classifier_container()["resources"]
    for resource in ("cpu", "memory"):
        assert (
            0 < quantity(resources["requests"][resource]) <= quantity(resources["limits"][resource])
        )


def test_service_and_autoscaler_point_at_the_deployment() -> None:
    deployment, service, hpa = (
        by_kind("Deployment"),
        by_kind("Service"),
        by_kind("HorizontalPodAutoscaler"),
    )
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    port_names = {port["name"] for port in classifier_container()["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= port_names
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def service_names_in_service_py() -> set[str]:
    """The `name=` of every @bentoml.service(...) class in service.py, read without importing."""
    tree = ast.parse((ROOT / "service.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call):
                    for keyword in decorator.keywords:
                        if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                            names.add(str(keyword.value.value))
    return names


def unknown_keys(config: dict[str, Any], schema: type) -> set[str]:
    return set(config) - {field.name for field in attrs.fields(schema)}


def test_bentocloud_config_matches_bentoml_deployment_schema() -> None:
    from bentoml._internal.cloud.schemas.modelschemas import (
        DeploymentServiceConfig,
        DeploymentTargetHPAConf,
    )
    from bentoml._internal.cloud.schemas.schemasv2 import CreateDeploymentSchema
    from bentoml._internal.utils.cattr import bentoml_cattr

    config = yaml.safe_load(BENTOCLOUD_CONFIG.read_text())
    # BentoML's schema ignores unknown keys, so a typo would deploy silently wrong.
    assert unknown_keys(config, CreateDeploymentSchema) <= {"cluster"}
    for service in config["services"].values():
        assert not unknown_keys(service, DeploymentServiceConfig)
        assert not unknown_keys(service["scaling"], DeploymentTargetHPAConf)
    structured = bentoml_cattr.structure(config, CreateDeploymentSchema)
    assert structured.access_authorization is True
    assert set(structured.services) == service_names_in_service_py()
