"""deploy/: the YAML parses, carries what operators rely on, and names only real settings."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
SETTINGS = {f"DREAMPRM_{name.upper()}" for name in Settings.model_fields}


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_docs() -> list[dict[str, Any]]:
    docs = [d for p in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in load_all(p)]
    assert all({"apiVersion", "kind", "metadata"} <= d.keys() for d in docs)
    return docs


def k8s() -> dict[str, dict[str, Any]]:
    """The PRM's own objects, by kind (redis and the policy have their own Deployment and Service)."""
    return {d["kind"]: d for d in k8s_docs() if d["metadata"]["name"].startswith("dreamprm")
            and d["metadata"]["name"] != "dreamprm-redis"}


def test_compose_services_profiles_and_settings() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"prm", "redis", "vllm"} <= services.keys()
    assert services["vllm"]["profiles"] == ["gpu"] and "profiles" not in services["prm"]
    gpu = services["vllm"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    prm = services["prm"]
    assert set(prm["environment"]) <= SETTINGS, set(prm["environment"]) - SETTINGS
    assert prm["environment"]["DREAMPRM_REDIS_URL"].startswith("redis://redis:")
    assert prm["depends_on"]["redis"]["condition"] == "service_healthy"
    assert prm["healthcheck"]["test"] == ["CMD", "python", "-m", "service.cli.healthcheck"]  # follows DREAMPRM_PORT
    assert prm["environment"]["DREAMPRM_CHECKPOINT"] == "/checkpoint"
    assert any(v.endswith(":/checkpoint:ro") for v in prm["volumes"])
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


def test_k8s_config_names_only_services_that_exist() -> None:
    docs = k8s_docs()
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in docs if d["kind"] == "Deployment"]
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    for key in ("DREAMPRM_REDIS_URL", "DREAMPRM_POLICY_URL"):
        url = urlsplit(cm["data"][key])
        assert url.hostname in services, f"{key} names {url.hostname}, which no manifest creates"
        svc = services[url.hostname]
        assert url.port in {p["port"] for p in svc["spec"]["ports"]}, f"{key}: port {url.port} not on the Service"
        assert any(svc["spec"]["selector"].items() <= labels.items() for labels in pods), f"{key}: no pods behind it"


def test_dockerfile_serves_checkpoint_mounted_at_slash_checkpoint() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "DREAMPRM_CHECKPOINT=/checkpoint" in text and re.search(r"^COPY \S+ /checkpoint$", text, re.M)
    assert re.search(r"^FROM .* AS deps\n(?:.*\n)*?WORKDIR ", text, re.M), "the deps stage needs a WORKDIR"
    assert re.search(r"^USER prm$", text, re.M) and "service.cli.healthcheck" in text


def test_compose_engine_override_serves_the_export_on_vllm() -> None:
    base = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    over = yaml.safe_load((DEPLOY / "compose.engine.yaml").read_text())
    services = over["services"]
    prm, engine, export = services["prm"], services["prm-engine"], services["prm-export"]
    env = prm["environment"]
    assert set(env) <= SETTINGS and env["DREAMPRM_ENGINE"] == "vllm"
    Settings(**{k.removeprefix("DREAMPRM_").lower(): v for k, v in {**base["prm"]["environment"], **env}.items()
                if "${" not in str(v)})
    assert urlsplit(env["DREAMPRM_ENGINE_URL"]).hostname == "prm-engine"
    assert prm["depends_on"]["prm-engine"]["condition"] == "service_healthy"  # ready only once the engine is
    assert engine["depends_on"]["prm-export"]["condition"] == "service_completed_successfully"
    out = export["command"][export["command"].index("--format") - 1]
    assert engine["command"][engine["command"].index("--model") + 1] == out == env["DREAMPRM_CHECKPOINT"]
    assert "--tensor-parallel-size" in engine["command"] and "prm-hf" in over["volumes"]
    # the default step_tag_id is the SmolLM2 checkpoint's separator (its first added token): the engine's default
    manifest = json.loads((ROOT / "checkpoints" / "dreamprm-code-smollm2" / "prm.json").read_text())
    pooler = engine["command"][engine["command"].index("--pooler-config") + 1]
    assert f"PRM_STEP_TAG_ID:-{manifest['adapter']['first_added_id']}" in pooler


def test_k8s_engine_objects_fit_together() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in k8s_docs()}
    engine, svc = docs[("Deployment", "prm-engine")], docs[("Service", "prm-engine")]
    job, pvc = docs[("Job", "prm-engine-export")], docs[("PersistentVolumeClaim", "prm-engine-model")]
    pod = engine["spec"]["template"]
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (vllm,) = pod["spec"]["containers"]
    args = vllm["args"]
    (export,) = job["spec"]["template"]["spec"]["containers"]
    assert args[args.index("--model") + 1] == export["args"][export["args"].index("--format") - 1]
    assert json.loads(args[args.index("--pooler-config") + 1])["tok_pooling_type"] == "STEP"
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == int(args[args.index("--tensor-parallel-size") + 1])
    claims = {v["persistentVolumeClaim"]["claimName"] for spec in (pod["spec"], job["spec"]["template"]["spec"])
              for v in spec["volumes"] if "persistentVolumeClaim" in v}
    assert pvc["metadata"]["name"] in claims
    assert vllm["readinessProbe"]["httpGet"]["path"] == "/health"
