"""The Kubernetes manifests of ``deploy/kubernetes/`` and the Dagster chart's values beside them.

No cluster and no network: the native objects are validated against the Kubernetes OpenAPI schemas
that ``kubernetes-validate`` ships (strict: unknown fields fail), the ScaledObject against KEDA's
documented spec and the trigger metadata the scaler reads, and everything against everything else:
Services against the pods they select, command lines against the real ``pmx`` and ``mlflow``
commands, environment variables against the settings, addresses against the Services they name.
"""

from __future__ import annotations

import ast
import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import kubernetes_validate
import pytest
import yaml

from prioritymax.settings import REPO_ROOT, Settings

K8S = REPO_ROOT / "deploy" / "kubernetes"
VALUES = K8S / "dagster-values.yaml"
KUSTOMIZATION = K8S / "kustomization.yaml"
NAMESPACE = "prioritymax"
IMAGE = "prioritymax-workbench:latest"
#: The oldest Kubernetes the manifests target, and the newest the package has schemas for.
KUBERNETES_VERSIONS = ("1.31", "1.37")
#: API groups whose objects have no schema in kubernetes-validate: checked by hand below.
NON_NATIVE_GROUPS = {"keda.sh", "kustomize.config.k8s.io"}
#: Images other than the project's, by workload: the minimal databases.
THIRD_PARTY_IMAGES = {"postgres": "postgres:", "redis": "redis:"}
#: Variables the official images read (hub.docker.com/_/postgres); redis takes none.
IMAGE_VARIABLES = {"postgres": {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "PGDATA"}}
#: In-cluster addresses of what these manifests do not create: the Helm release of
#: dagster-values.yaml (`helm install dagster ...`: service `<release>-dagster-webserver`, port 80)
#: and the cluster's Prometheus.
EXTERNAL_SERVICES = {("dagster-dagster-webserver", NAMESPACE): {80},
                     ("prometheus-operated", "monitoring"): {9090}}
REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")

# --------------------------------------------------------------------------- KEDA's documented spec
# https://keda.sh/docs/latest/reference/scaledobject-spec/ (ScaledObject, keda.sh/v1alpha1)
SCALED_OBJECT_SPEC = {"scaleTargetRef": dict, "pollingInterval": int, "cooldownPeriod": int,
                      "initialCooldownPeriod": int, "idleReplicaCount": int, "minReplicaCount": int,
                      "maxReplicaCount": int, "fallback": dict, "advanced": dict, "triggers": list}
SCALE_TARGET_REF = {"apiVersion", "kind", "name", "namePrefix", "labelSelector", "envSourceContainerName"}
ADVANCED = {"restoreToOriginalReplicaCount", "horizontalPodAutoscalerConfig", "scalingModifiers"}
HPA_CONFIG = {"name", "behavior"}
TRIGGER = {"type", "name", "metadata", "metricType", "useCachedMetrics", "authenticationRef"}
# https://keda.sh/docs/latest/scalers/external/: KEDA's own keys of an `external` trigger; the
# whole metadata also reaches the scaler (ScaledObjectRef.scalerMetadata).
KEDA_EXTERNAL_KEYS = {"scalerAddress", "enableTLS", "unsafeSsl", "caCert", "tlsClientCert", "tlsClientKey"}
SCALER_SOURCE = REPO_ROOT / "api" / "autoscaler" / "keda" / "scaler.py"

# ------------------------------------------------------------- Dagster's chart (dagster/dagster)
# The chart's values schema, helm/dagster/schema/schema/charts/dagster/values.py (DagsterHelmValues)
# and its subschemas (github.com/dagster-io/dagster): the keys its values.yaml documents.
DAGSTER_TOP_LEVEL = {"dagsterWebserver", "dagster-user-deployments", "postgresql",
                     "generatePostgresqlPasswordSecret", "generateCeleryConfigSecret", "rabbitmq",
                     "redis", "flower", "ingress", "imagePullSecrets", "computeLogManager", "scheduler",
                     "runLauncher", "pythonLogs", "dagsterDaemon", "busybox", "migrate", "telemetry",
                     "serviceAccount", "global", "retention", "additionalInstanceConfig"}
DAGSTER_GLOBAL = {"postgresqlSecretName", "dagsterHome", "serviceAccountName", "celeryConfigSecretName"}
DAGSTER_POSTGRESQL = {"image", "enabled", "postgresqlHost", "postgresqlUsername", "postgresqlPassword",
                      "postgresqlDatabase", "postgresqlParams", "postgresqlScheme", "service"}
DAGSTER_USER_DEPLOYMENTS = {"enabled", "enableSubchart", "imagePullSecrets", "deployments"}
DAGSTER_USER_DEPLOYMENT = {
    "name", "image", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns",
    "deploymentNamespace", "port", "env", "envConfigMaps", "envSecrets", "annotations", "nodeSelector",
    "affinity", "tolerations", "podSecurityContext", "securityContext", "resources", "livenessProbe",
    "readinessProbe", "startupProbe", "labels", "volumeMounts", "volumes", "schedulerName",
    "initContainers", "sidecarContainers", "deploymentStrategy"}
DAGSTER_DAEMON = {
    "enabled", "image", "runCoordinator", "heartbeatTolerance", "env", "envConfigMaps", "envSecrets",
    "deploymentLabels", "labels", "nodeSelector", "affinity", "tolerations", "podSecurityContext",
    "securityContext", "resources", "livenessProbe", "readinessProbe", "startupProbe", "annotations",
    "runMonitoring", "runRetries", "sensors", "schedules", "schedulerName", "volumeMounts", "volumes"}
DAGSTER_QUEUED_RUN_COORDINATOR = {"maxConcurrentRuns", "tagConcurrencyLimits", "dequeueIntervalSeconds",
                                  "dequeueNumWorkers", "dequeueUseThreads"}
PULL_POLICIES = {"Always", "IfNotPresent", "Never"}


# ================================================================================== loading
def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p not in (VALUES, KUSTOMIZATION))


def load_documents() -> list[dict[str, Any]]:
    docs = []
    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append(doc)
    return docs


DOCS = load_documents()


def group(doc: dict[str, Any]) -> str:
    return doc["apiVersion"].rpartition("/")[0]


def of_kind(kind: str, docs: list[dict[str, Any]] = DOCS) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def named(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in of_kind(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def workloads() -> list[dict[str, Any]]:
    return of_kind("Deployment") + of_kind("StatefulSet")


def containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for workload in workloads():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            yield workload, container


def argv(container: dict[str, Any]) -> list[str]:
    return list(container.get("command", [])) + list(container.get("args", []))


def pmx_containers(subcommand: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(w, c) for w, c in containers() if argv(c)[:2] == ["pmx", subcommand]]


def the_pmx_container(subcommand: str) -> tuple[dict[str, Any], dict[str, Any]]:
    found = pmx_containers(subcommand)
    assert len(found) == 1, f"`pmx {subcommand}` runs in {len(found)} containers"
    return found[0]


def config_map() -> dict[str, str]:
    return named("ConfigMap", "prioritymax-config")["data"]


def secret_keys(name: str) -> set[str]:
    secret = named("Secret", name)
    return set(secret.get("stringData", {})) | set(secret.get("data", {}))


def env_from_keys(container: dict[str, Any]) -> set[str]:
    """The variables that ``envFrom`` gives ``container`` (each source must exist)."""
    keys: set[str] = set()
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            keys |= set(named("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            keys |= secret_keys(source["secretRef"]["name"])
    return keys


def settings_variables() -> set[str]:
    """Every variable ``prioritymax.settings.Settings`` reads (as tests/test_settings.py lists them)."""
    return {field.validation_alias.choices[0] for field in Settings.model_fields.values()}


def click_command(group_: click.Group, name: str) -> click.Command:
    command = group_.get_command(click.Context(group_), name)
    assert command is not None, f"no such command: {name}"
    return command


def pmx_command(name: str) -> click.Command:
    from pmx.cli import cli

    return click_command(cli, name)


def envvars(command: click.Command) -> set[str]:
    names: set[str] = set()
    for param in command.params:
        if isinstance(param.envvar, str):
            names.add(param.envvar)
        elif param.envvar:
            names.update(param.envvar)
    return names


def parse(command: click.Command, args: list[str]) -> dict[str, Any]:
    """``args`` parsed (and type-checked) the way the command would, without running it."""
    with command.make_context(command.name, list(args)) as ctx:
        return dict(ctx.params)


def container_port(container: dict[str, Any], port: int | str) -> dict[str, Any]:
    key = "name" if isinstance(port, str) else "containerPort"
    found = [p for p in container.get("ports", []) if p.get(key) == port]
    assert found, f"container {container['name']} has no port {port!r}"
    return found[0]


def service_address(url_or_address: str) -> tuple[str, str, int]:
    """``(service, namespace, port)`` of an in-cluster ``<svc>.<ns>.svc.cluster.local:<port>``."""
    split = urlsplit(url_or_address if "//" in url_or_address else f"//{url_or_address}")
    match = re.fullmatch(r"([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local", split.hostname or "")
    assert match, f"{url_or_address}: not <service>.<namespace>.svc.cluster.local"
    port = split.port or {"http": 80, "https": 443}[split.scheme]
    return match[1], match[2], port


def service_ports(name: str, namespace: str) -> dict[int, dict[str, Any]]:
    if (name, namespace) in EXTERNAL_SERVICES:
        return {port: {} for port in EXTERNAL_SERVICES[name, namespace]}
    services = [s for s in of_kind("Service")
                if s["metadata"]["name"] == name and s["metadata"]["namespace"] == namespace]
    assert services, f"no Service {namespace}/{name} in the manifests"
    return {p["port"]: p for p in services[0]["spec"]["ports"]}


def init_databases() -> set[str]:
    """The databases PostgreSQL holds: POSTGRES_DB and those the init script creates."""
    env = {e["name"]: e.get("value") for e in named("StatefulSet", "postgres")["spec"]["template"]
           ["spec"]["containers"][0]["env"]}
    script = "\n".join(named("ConfigMap", "postgres-init")["data"].values())
    return {env["POSTGRES_DB"], *re.findall(r"CREATE DATABASE (\w+)", script)}


def check_database_url(url: str) -> str:
    """The URL names the in-cluster PostgreSQL with psycopg 3 (the project's driver) and a database
    that exists there; returns the database."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url.replace("$(POSTGRES_PASSWORD)", "password"))
    assert parsed.drivername == "postgresql+psycopg", url
    postgres = named("StatefulSet", "postgres")["spec"]["template"]["spec"]["containers"][0]
    user = {e["name"]: e.get("value") for e in postgres["env"]}["POSTGRES_USER"]
    assert parsed.username == user and "$(POSTGRES_PASSWORD)" in url, url
    service, namespace, port = service_address(f"{parsed.host}:{parsed.port}")
    assert service == "postgres" and namespace == NAMESPACE and port in service_ports(service, namespace)
    assert parsed.database in init_databases(), f"{url}: PostgreSQL has no database {parsed.database}"
    return parsed.database


def check_env(where: str, env: list[dict[str, Any]], given: set[str], allowed: set[str]) -> None:
    """Each variable of ``env`` (after ``given``, the envFrom ones) is one the program reads
    (``allowed``) or a helper another one refers to as ``$(NAME)``; every ``$(NAME)`` is defined
    before it is used (Kubernetes expands only those); every secret/config key reference exists."""
    defined = set(given)
    referenced: set[str] = set()
    for var in env:
        for name in REFERENCE.findall(var.get("value", "")):
            assert name in defined, f"{where}: {var['name']} uses $({name}) before it is defined"
            referenced.add(name)
        source = var.get("valueFrom", {})
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            assert ref["key"] in secret_keys(ref["name"]), f"{where}: {ref} does not exist"
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            assert ref["key"] in named("ConfigMap", ref["name"])["data"], f"{where}: {ref} does not exist"
        defined.add(var["name"])
    unknown = defined - allowed - referenced
    assert not unknown, f"{where}: variables nothing reads: {sorted(unknown)}"


def scaler_metadata_keys() -> set[str]:
    """The metadata keys ``Trigger.parse`` reads (``meta.get("...")``, ``_seconds(meta, "...")``),
    parsed from api/autoscaler/keda/scaler.py; ``query.<field>`` is handled apart."""
    tree = ast.parse(SCALER_SOURCE.read_text())
    keys = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        getter = (isinstance(func, ast.Attribute) and func.attr == "get"
                  and isinstance(func.value, ast.Name) and func.value.id == "meta")
        seconds = isinstance(func, ast.Name) and func.id == "_seconds"
        arg = node.args[0] if getter else (node.args[1] if seconds and len(node.args) > 1 else None)
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            keys.add(arg.value)
    return keys


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity as a number (``"0"``, ``"0.01"``, ``"10m"``)."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def hpa_from(scaled_object: dict[str, Any]) -> dict[str, Any]:
    """The HorizontalPodAutoscaler KEDA makes of the ScaledObject (keda-hpa-<name>): its bounds,
    behavior and one external metric of type AverageValue with the scaler's target of 1."""
    spec = scaled_object["spec"]
    ref = spec["scaleTargetRef"]
    hpa_spec = {
        "scaleTargetRef": {"apiVersion": ref.get("apiVersion", "apps/v1"),
                           "kind": ref.get("kind", "Deployment"), "name": ref["name"]},
        "minReplicas": max(1, spec.get("minReplicaCount", 0)),
        "maxReplicas": spec.get("maxReplicaCount", 100),
        "metrics": [{"type": "External", "external": {
            "metric": {"name": "s0-prioritymax-queue-consumer"},
            "target": {"type": "AverageValue", "averageValue": "1"}}}],
    }
    behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
    if behavior is not None:
        hpa_spec["behavior"] = behavior
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": f"keda-hpa-{scaled_object['metadata']['name']}",
                         "namespace": scaled_object["metadata"]["namespace"]},
            "spec": hpa_spec}


def the_scaled_object() -> dict[str, Any]:
    found = of_kind("ScaledObject")
    assert len(found) == 1
    return found[0]


# ================================================================================ the files
def test_the_kustomization_lists_every_manifest_and_nothing_else():
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    assert kustomization["kind"] == "Kustomization" and kustomization["namespace"] == NAMESPACE
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources))
    assert set(resources) == {p.name for p in manifest_files()}
    assert resources[0] == "namespace.yaml"


def test_the_namespace_and_every_object_in_it():
    assert [d["metadata"]["name"] for d in of_kind("Namespace")] == [NAMESPACE]
    seen = set()
    for doc in DOCS:
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in seen, f"two {key}"
        seen.add(key)
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, key


def test_the_readme_says_the_image_is_not_built_yet_and_the_apply_order():
    readme = (K8S / "README.md").read_text()
    for needle in (IMAGE, "deploy/Dockerfile", "kubectl apply -k deploy/kubernetes/",
                   "helm install dagster dagster/dagster", "dagster-values.yaml"):
        assert needle in readme, needle


# ============================================================== Kubernetes schemas (strict)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_native_objects_validate_against_the_kubernetes_schemas(version):
    kinds = set()
    for doc in DOCS:
        if group(doc) in NON_NATIVE_GROUPS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']} (Kubernetes {version}): {error}")
        kinds.add(doc["kind"])
    assert {"Namespace", "ConfigMap", "Secret", "PersistentVolumeClaim", "Service", "Deployment",
            "StatefulSet"} <= kinds
    assert {d["kind"] for d in DOCS if group(d) in NON_NATIVE_GROUPS} == {"ScaledObject"}


def test_strict_validation_catches_a_misplaced_field():
    """The check above can fail: a field in the wrong place is refused."""
    deployment = copy.deepcopy(named("Deployment", "prioritymax-api"))
    kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


# ===================================================================== images and workloads
def test_every_container_runs_the_project_image_or_a_database():
    for workload, container in containers():
        name = workload["metadata"]["name"]
        if name in THIRD_PARTY_IMAGES:
            assert container["image"].startswith(THIRD_PARTY_IMAGES[name]), name
        else:
            assert container["image"] == IMAGE, name
            assert container.get("imagePullPolicy") == "IfNotPresent", name  # a locally loaded image


def test_services_select_pods_and_target_their_ports():
    pods = [(w, w["spec"]["template"]) for w in workloads()]
    for service in of_kind("Service"):
        selector = service["spec"]["selector"]
        selected = [(w, t) for w, t in pods
                    if selector.items() <= t["metadata"]["labels"].items()
                    and w["metadata"]["namespace"] == service["metadata"]["namespace"]]
        assert len(selected) == 1, f"Service {service['metadata']['name']} selects {len(selected)} workloads"
        workload, template = selected[0]
        assert workload["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
        names = [p["name"] for p in service["spec"]["ports"]]
        assert len(names) == len(set(names))
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            key = "name" if isinstance(target, str) else "containerPort"
            declared = [p.get(key) for c in template["spec"]["containers"] for p in c.get("ports", [])]
            assert target in declared, \
                f"Service {service['metadata']['name']} port {port['name']}: no container port {target!r}"
    for statefulset in of_kind("StatefulSet"):
        named("Service", statefulset["spec"]["serviceName"])


def test_probes_use_declared_ports():
    for workload, container in containers():
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container.get(kind)
            if probe is None:
                continue
            for action in ("httpGet", "tcpSocket"):
                if action in probe:
                    container_port(container, probe[action]["port"])
        assert "readinessProbe" in container or workload["metadata"]["name"] == "queue-consumer", \
            workload["metadata"]["name"]


# ============================================================================ the API
def test_the_api_runs_pmx_api_on_all_interfaces_with_two_replicas():
    workload, container = the_pmx_container("api")
    assert workload["kind"] == "Deployment" and workload["spec"]["replicas"] == 2
    params = parse(pmx_command("api"), argv(container)[2:])
    assert params["host"] == "0.0.0.0"
    assert container_port(container, "http")["containerPort"] == params["port"] == 8000


def test_the_api_probes_a_real_route_that_needs_no_token():
    from api.main import create_app

    paths = set(create_app().openapi()["paths"])
    _, container = the_pmx_container("api")
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        path = container[kind]["httpGet"]["path"]
        assert path in paths, f"{kind}: the API has no route {path}"
        assert path.endswith("/health"), path  # the health routes need no token


def test_the_api_reads_postgres_redis_and_its_secrets():
    _, container = the_pmx_container("api")
    given = env_from_keys(container)
    assert {"REDIS_URL", "PRIORITYMAX_ADMIN_TOKEN", "FERNET_KEY", "PRIORITYMAX_HOME",
            "MLFLOW_TRACKING_URI"} <= given
    assert {"PRIORITYMAX_ADMIN_TOKEN", "FERNET_KEY"} <= secret_keys("prioritymax-secrets")
    assert "PRIORITYMAX_ADMIN_TOKEN" not in config_map() and "FERNET_KEY" not in config_map()
    env = {e["name"]: e for e in container["env"]}
    assert check_database_url(env["PRIORITYMAX_DB_URL"]["value"]) == "prioritymax"


# ===================================================================== the autoscaler worker
def test_the_worker_runs_pmx_autoscaler_with_the_keda_port():
    workload, container = the_pmx_container("autoscaler")
    assert workload["kind"] == "Deployment"
    params = parse(pmx_command("autoscaler"), argv(container)[2:])
    assert params["host"] == "0.0.0.0"
    assert container_port(container, "http")["containerPort"] == params["port"] == 8100
    assert container_port(container, "grpc")["containerPort"] == params["grpc_port"] == 9100
    service, namespace, port = service_address(params["api_url"])
    api_workload, api_container = the_pmx_container("api")
    target = service_ports(service, namespace)[port]["targetPort"]
    assert container_port(api_container, target)["containerPort"] == 8000
    assert named("Service", service)["spec"]["selector"].items() <= \
        api_workload["spec"]["template"]["metadata"]["labels"].items()


def test_the_worker_service_exposes_http_and_grpc():
    workload, container = the_pmx_container("autoscaler")
    services = [s for s in of_kind("Service") if s["spec"]["selector"].items()
                <= workload["spec"]["template"]["metadata"]["labels"].items()]
    assert len(services) == 1
    ports = {p["name"]: p for p in services[0]["spec"]["ports"]}
    assert set(ports) == {"http", "grpc"}
    assert ports["grpc"]["appProtocol"] == "grpc"
    assert container_port(container, ports["grpc"]["targetPort"])["containerPort"] == 9100
    assert container_port(container, ports["http"]["targetPort"])["containerPort"] == 8100


def test_the_worker_probes_its_health_route_and_is_guarded_by_a_token():
    from fastapi import FastAPI

    from api.autoscaler import routes

    app = FastAPI()
    app.include_router(routes.router)
    paths = set(app.openapi()["paths"])
    _, container = the_pmx_container("autoscaler")
    assert "/autoscaler/health" in paths
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[kind]["httpGet"]["path"] == "/autoscaler/health", kind
    # On all interfaces: every route but health asks for PRIORITYMAX_AUTOSCALER_TOKEN.
    env = {e["name"]: e for e in container["env"]}
    assert env["PRIORITYMAX_AUTOSCALER_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "prioritymax-secrets"
    assert "PRIORITYMAX_API_TOKEN" in env
    # Least privilege: none of the secrets it does not use.
    assert not container.get("envFrom") or all("secretRef" not in s for s in container["envFrom"])


# ============================================================= commands, variables, addresses
def test_pmx_commands_and_flags_are_real():
    project = [(w, c) for w, c in containers() if c["image"] == IMAGE]
    commands = {argv(c)[0] for _, c in project}
    assert commands == {"pmx", "mlflow", "python"}
    for workload, container in project:
        words = argv(container)
        if words[0] == "pmx":
            parse(pmx_command(words[1]), words[2:])
        elif words[0] == "python":
            assert workload["metadata"]["name"] == "queue-consumer"  # the placeholder consumer


def test_flag_parsing_refuses_a_misspelled_flag():
    """The check above can fail: a flag the command does not have is refused."""
    with pytest.raises(click.UsageError):
        parse(pmx_command("autoscaler"), ["--grpc-prot", "9100"])
    with pytest.raises(click.BadParameter):
        parse(pmx_command("autoscaler"), ["--grpc-port", "0"])


def test_mlflow_runs_a_real_server_command_on_the_postgres_and_data_home():
    from mlflow.cli import cli as mlflow_cli

    workload = named("Deployment", "mlflow")
    container = workload["spec"]["template"]["spec"]["containers"][0]
    words = argv(container)
    assert words[:2] == ["mlflow", "server"]
    server = click_command(mlflow_cli, "server")
    params = parse(server, words[2:])
    assert params["host"] == "0.0.0.0"
    assert container_port(container, "http")["containerPort"] == params["port"]
    assert params["serve_artifacts"] is True
    assert params["artifacts_destination"].startswith(config_map()["PRIORITYMAX_HOME"] + "/")
    hosts = params["allowed_hosts"].split(",")
    tracking = urlsplit(config_map()["MLFLOW_TRACKING_URI"])
    assert tracking.netloc in hosts  # else MLflow answers the clients 403 (DNS rebinding protection)
    env = {e["name"]: e for e in container["env"]}
    check_env("mlflow", container["env"], set(), envvars(server))
    assert check_database_url(env["MLFLOW_BACKEND_STORE_URI"]["value"]) == "mlflow"


def test_every_variable_is_one_its_program_reads():
    settings = settings_variables()
    checked = 0
    for workload, container in containers():
        name = workload["metadata"]["name"]
        words = argv(container)
        given = env_from_keys(container)
        if words[:1] == ["pmx"]:
            allowed = settings | envvars(pmx_command(words[1]))
        elif name in IMAGE_VARIABLES:
            allowed = IMAGE_VARIABLES[name]
        elif words[:1] == ["mlflow"]:
            continue  # test_mlflow_runs_a_real_server_command_on_the_postgres_and_data_home
        else:
            assert not container.get("env") and not given, name
            continue
        check_env(name, container.get("env", []), given, allowed)
        checked += 1
    assert checked >= 3
    assert set(config_map()) <= settings
    assert secret_keys("prioritymax-secrets") - settings == {"POSTGRES_PASSWORD"}


def test_a_variable_nothing_reads_is_refused():
    """The check above can fail: a misspelled setting is refused."""
    env = [{"name": "PRIORITYMAX_DB_ULR", "value": "x"}]
    with pytest.raises(AssertionError, match="PRIORITYMAX_DB_ULR"):
        check_env("api", env, set(), settings_variables())
    with pytest.raises(AssertionError, match="before it is defined"):
        check_env("api", [{"name": "PRIORITYMAX_DB_URL", "value": "$(POSTGRES_PASSWORD)"}], set(),
                  settings_variables())


def test_in_cluster_addresses_name_real_service_ports():
    config = config_map()
    for key in ("REDIS_URL", "MLFLOW_TRACKING_URI", "PRIORITYMAX_API_URL", "PRIORITYMAX_AUTOSCALER_URL",
                "PRIORITYMAX_DAGSTER_URL", "PRIORITYMAX_PROMETHEUS_URL"):
        service, namespace, port = service_address(config[key])
        assert port in service_ports(service, namespace), f"{key}: {config[key]}"
    assert service_address(config["PRIORITYMAX_API_URL"])[0] == "prioritymax-api"
    assert service_address(config["PRIORITYMAX_AUTOSCALER_URL"])[:2] == ("prioritymax-autoscaler", NAMESPACE)


def test_the_data_home_is_the_shared_volume():
    home = config_map()["PRIORITYMAX_HOME"]
    claim = named("PersistentVolumeClaim", "prioritymax-data")
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    mounted = 0
    for workload, container in containers():
        if container["image"] != IMAGE or workload["metadata"]["name"] == "queue-consumer":
            continue
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        mounts = [m for m in container["volumeMounts"] if m["mountPath"] == home]
        assert len(mounts) == 1, workload["metadata"]["name"]
        assert volumes[mounts[0]["name"]]["persistentVolumeClaim"]["claimName"] == "prioritymax-data"
        mounted += 1
    assert mounted == 3  # the API, the worker, MLflow


def test_the_secret_template_holds_placeholders_only():
    for secret in of_kind("Secret"):
        assert "data" not in secret, "stringData only, so the placeholders are readable"
        assert secret["stringData"] and set(secret["stringData"].values()) == {"change-me"}


# ============================================================================= the ScaledObject
def test_the_scaled_object_follows_kedas_spec():
    scaled_object = the_scaled_object()
    assert scaled_object["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled_object["spec"]
    for key, value in spec.items():
        assert key in SCALED_OBJECT_SPEC, f"KEDA's ScaledObject has no spec.{key}"
        assert isinstance(value, SCALED_OBJECT_SPEC[key]) and not isinstance(value, bool), key
        if SCALED_OBJECT_SPEC[key] is int:
            assert value >= 0, key
    assert {"scaleTargetRef", "triggers"} <= set(spec)
    assert set(spec["scaleTargetRef"]) <= SCALE_TARGET_REF
    assert set(spec.get("advanced", {})) <= ADVANCED
    assert set(spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {})) <= HPA_CONFIG
    assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
    if "idleReplicaCount" in spec:
        assert spec["idleReplicaCount"] < spec["minReplicaCount"]
    for trigger in spec["triggers"]:
        assert set(trigger) <= TRIGGER and {"type", "metadata"} <= set(trigger)
        assert all(isinstance(v, str) for v in trigger["metadata"].values()), "metadata values are strings"


def test_the_scaled_object_targets_the_example_workload():
    spec = the_scaled_object()["spec"]
    ref = spec["scaleTargetRef"]
    assert ref.get("apiVersion", "apps/v1") == "apps/v1" and ref.get("kind", "Deployment") == "Deployment"
    target = named("Deployment", ref["name"])
    assert target["metadata"]["name"] == "queue-consumer"
    assert "replicas" not in target["spec"], "the HPA owns the count; re-applying must not reset it"


def test_the_trigger_calls_the_workers_grpc_port():
    (trigger,) = the_scaled_object()["spec"]["triggers"]
    assert trigger["type"] == "external"
    assert trigger.get("metricType", "AverageValue") == "AverageValue"  # ceil(value / target)
    service, namespace, port = service_address(trigger["metadata"]["scalerAddress"])
    grpc = service_ports(service, namespace)[port]
    assert grpc["name"] == "grpc" and grpc["appProtocol"] == "grpc"
    workload, container = the_pmx_container("autoscaler")
    assert named("Service", service)["spec"]["selector"].items() <= \
        workload["spec"]["template"]["metadata"]["labels"].items()
    params = parse(pmx_command("autoscaler"), argv(container)[2:])
    assert container_port(container, grpc["targetPort"])["containerPort"] == params["grpc_port"]


def test_the_trigger_metadata_is_what_the_scaler_reads():
    from api.autoscaler.prometheus import FIELDS

    keys = scaler_metadata_keys()
    # The parse found the scaler's keys (it fails when the scaler reads them some other way).
    assert {"tenant", "pool", "readings", "prometheusAddress", "decisionCacheSeconds",
            "maxReadingAgeSeconds", "streamIntervalSeconds"} <= keys
    (trigger,) = the_scaled_object()["spec"]["triggers"]
    metadata = trigger["metadata"]
    allowed = KEDA_EXTERNAL_KEYS | keys | {f"query.{field}" for field in FIELDS}
    assert set(metadata) <= allowed, sorted(set(metadata) - allowed)
    assert {"tenant", "pool", "readings", "prometheusAddress", "decisionCacheSeconds"} <= set(metadata)
    assert metadata["readings"] == "prometheus"
    assert metadata["pool"] == the_scaled_object()["spec"]["scaleTargetRef"]["name"]
    service, namespace, port = service_address(metadata["prometheusAddress"])
    assert port in service_ports(service, namespace)


def test_the_scaler_accepts_the_trigger():
    from api.autoscaler.keda import externalscaler_pb2 as pb
    from api.autoscaler.keda.scaler import Trigger, TriggerError

    scaled_object = the_scaled_object()
    (trigger,) = scaled_object["spec"]["triggers"]
    ref = pb.ScaledObjectRef(name=scaled_object["metadata"]["name"], namespace=NAMESPACE,
                             scalerMetadata=trigger["metadata"])
    parsed = Trigger.parse(ref, Settings())
    assert parsed.pool == "queue-consumer" and parsed.readings == "prometheus"
    assert parsed.prometheus_url == trigger["metadata"]["prometheusAddress"]
    assert 0 < parsed.cache_seconds <= scaled_object["spec"].get("pollingInterval", 30)
    bad = pb.ScaledObjectRef(name="x", namespace=NAMESPACE,
                             scalerMetadata=trigger["metadata"] | {"readings": "guessed"})
    with pytest.raises(TriggerError):
        Trigger.parse(bad, Settings())


def test_the_hpa_edge_cases_are_set_as_the_scaler_documents():
    """api/autoscaler/keda/scaler.py's module doc: bounds = the policy's, no stabilization, a
    tolerance under one replica's step."""
    from ml.sim.config import SimConfig

    spec = the_scaled_object()["spec"]
    policy = SimConfig()
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (policy.min_workers, policy.max_workers)
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    for direction in ("scaleUp", "scaleDown"):
        rules = behavior[direction]
        assert rules["stabilizationWindowSeconds"] == 0, direction
        # A one-replica step at the largest pool must pass: |(n + 1) / n - 1| = 1 / n > tolerance.
        assert quantity(rules["tolerance"]) < 1 / spec["maxReplicaCount"], direction
    assert "scalingModifiers" not in spec.get("advanced", {})  # it would replace the scaler's metric


@pytest.mark.parametrize("version", ["1.34", KUBERNETES_VERSIONS[-1]])
def test_the_hpa_keda_makes_is_valid(version):
    kubernetes_validate.validate(hpa_from(the_scaled_object()), version, strict=True)


def test_older_clusters_only_lose_the_tolerance():
    """Before 1.33 the API server has no `tolerance` and drops it; the rest of the HPA is valid."""
    hpa = hpa_from(the_scaled_object())
    with pytest.raises(kubernetes_validate.ValidationError, match="tolerance"):
        kubernetes_validate.validate(hpa, KUBERNETES_VERSIONS[0], strict=True)
    for rules in hpa["spec"]["behavior"].values():
        rules.pop("tolerance")
    kubernetes_validate.validate(hpa, KUBERNETES_VERSIONS[0], strict=True)


# ======================================================================= Dagster's chart values
def dagster_values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


def the_user_deployment() -> dict[str, Any]:
    user = dagster_values()["dagster-user-deployments"]
    assert set(user) <= DAGSTER_USER_DEPLOYMENTS and user["enabled"] is True
    (deployment,) = user["deployments"]
    return deployment


def test_dagster_values_use_keys_the_chart_has():
    values = dagster_values()
    assert set(values) <= DAGSTER_TOP_LEVEL, sorted(set(values) - DAGSTER_TOP_LEVEL)
    assert set(values.get("global", {})) <= DAGSTER_GLOBAL
    assert set(values["postgresql"]) <= DAGSTER_POSTGRESQL
    assert set(the_user_deployment()) <= DAGSTER_USER_DEPLOYMENT
    daemon = values.get("dagsterDaemon", {})
    assert set(daemon) <= DAGSTER_DAEMON
    coordinator = daemon.get("runCoordinator", {})
    assert set(coordinator) <= {"enabled", "type", "config"}
    queued = coordinator.get("config", {}).get("queuedRunCoordinator", {})
    assert set(queued) <= DAGSTER_QUEUED_RUN_COORDINATOR


def test_dagster_serves_the_projects_code_location():
    deployment = the_user_deployment()
    workspace = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())
    (location,) = workspace["load_from"]
    module = location["python_module"]["module_name"]
    assert module == "orchestration.definitions"
    assert deployment["name"]
    repository, tag = IMAGE.split(":")
    image = deployment["image"]
    assert (image["repository"], image["tag"]) == (repository, tag)
    assert image["pullPolicy"] in PULL_POLICIES
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", module]
    assert deployment["port"] == 3030


def test_dagster_uses_the_same_postgres_secrets_and_data_home():
    values = dagster_values()
    postgresql = values["postgresql"]
    assert postgresql["enabled"] is False and values["generatePostgresqlPasswordSecret"] is False
    address = f"{postgresql['postgresqlHost']}:{postgresql['service']['port']}"
    service, namespace, port = service_address(address)
    assert (service, namespace) == ("postgres", NAMESPACE) and port in service_ports(service, namespace)
    assert postgresql["postgresqlDatabase"] in init_databases()
    postgres = named("StatefulSet", "postgres")["spec"]["template"]["spec"]["containers"][0]
    user = {e["name"]: e.get("value") for e in postgres["env"]}["POSTGRES_USER"]
    assert postgresql["postgresqlUsername"] == user
    assert "postgresql-password" in secret_keys(values["global"]["postgresqlSecretName"])

    deployment = the_user_deployment()
    # As a pod: its env, envFrom, volumes and mounts, validated as Kubernetes objects.
    container = {"name": "user-code", "image": IMAGE, "env": deployment["env"],
                 "envFrom": [{"configMapRef": {"name": c["name"]}} for c in deployment["envConfigMaps"]]
                 + [{"secretRef": {"name": s["name"]}} for s in deployment["envSecrets"]],
                 "volumeMounts": deployment["volumeMounts"]}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "user-code", "namespace": NAMESPACE},
           "spec": {"containers": [container], "volumes": deployment["volumes"]}}
    kubernetes_validate.validate(pod, KUBERNETES_VERSIONS[-1], strict=True)
    given = env_from_keys(container)
    check_env("dagster user code", deployment["env"], given, settings_variables())
    env = {e["name"]: e for e in deployment["env"]}
    assert check_database_url(env["PRIORITYMAX_DB_URL"]["value"]) == "prioritymax"
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}  # runs get the same
    (mount,) = deployment["volumeMounts"]
    assert mount["mountPath"] == config_map()["PRIORITYMAX_HOME"]
    volume = {v["name"]: v for v in deployment["volumes"]}[mount["name"]]
    named("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])


def test_dagsters_run_queue_matches_the_workbench_instance():
    from orchestration.instance import MAX_CONCURRENT_RUNS, TRAINING_TAG

    coordinator = dagster_values()["dagsterDaemon"]["runCoordinator"]
    assert coordinator["type"] == "QueuedRunCoordinator"
    queued = coordinator["config"]["queuedRunCoordinator"]
    assert queued["maxConcurrentRuns"] == MAX_CONCURRENT_RUNS
    assert queued["tagConcurrencyLimits"] == [{"key": TRAINING_TAG, "limit": 1}]
