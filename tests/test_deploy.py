"""deploy/: the YAML parses, carries what operators rely on, and names only real settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
SETTINGS = {f"DREAMPRM_{name.upper()}" for name in Settings.model_fields}


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s() -> dict[str, dict[str, Any]]:
    docs = [d for p in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in load_all(p)]
    assert all({"apiVersion", "kind", "metadata"} <= d.keys() for d in docs)
    return {d["kind"]: d for d in docs}


def test_compose_services_profiles_and_settings() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"prm", "redis", "vllm"} <= services.keys()
    assert services["vllm"]["profiles"] == ["gpu"] and "profiles" not in services["prm"]
    gpu = services["vllm"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    prm = services["prm"]
    assert "/ready" in " ".join(prm["healthcheck"]["test"])
    assert set(prm["environment"]) <= SETTINGS, set(prm["environment"]) - SETTINGS
    assert prm["environment"]["DREAMPRM_REDIS_URL"].startswith("redis://redis:")
    assert prm["depends_on"]["redis"]["condition"] == "service_healthy"
    assert (ROOT / prm["build"]["context"].replace("..", ".") / prm["build"]["dockerfile"]).is_file()


def test_k8s_objects_fit_together() -> None:
    objs = k8s()
    assert {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler"} <= objs.keys()
    dep, svc, cm, hpa = objs["Deployment"], objs["Service"], objs["ConfigMap"], objs["HorizontalPodAutoscaler"]
    pod = dep["spec"]["template"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert svc["spec"]["ports"][0]["targetPort"] in ports
    assert container["startupProbe"]["httpGet"]["path"] == "/ready"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1  # one worker per GPU
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["envFrom"][0]["configMapRef"]["name"] == cm["metadata"]["name"]
    assert set(cm["data"]) <= SETTINGS, set(cm["data"]) - SETTINGS
    Settings(**{k.removeprefix("DREAMPRM_").lower(): v for k, v in cm["data"].items()})  # values validate
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


@pytest.mark.parametrize("path", ["Dockerfile", "deploy/compose.yaml", "README.md"])
def test_documented_settings_exist(path: str) -> None:
    named = set(re.findall(r"DREAMPRM_[A-Z_]+[A-Z]", (ROOT / path).read_text()))
    assert named - {"DREAMPRM_URL", "DREAMPRM_API_KEY"} <= SETTINGS, named - SETTINGS
