"""Config validation as an operator meets it: the CLI verdict and Envoy accepting what we generate."""

from __future__ import annotations

import re
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel

from devstack.stack import ROOT
from router.cli import build_parser
from router.config import ConfigError, RouterConfig, load_config, parse_config
from router.envoy_config import envoy_config, render

SHIPPED = ROOT / "config" / "config.yaml"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router.cli", *args], capture_output=True, text=True, cwd=ROOT, check=False)


def test_shipped_config_is_valid() -> None:
    result = _cli("validate", str(SHIPPED))
    assert result.returncode == 0, result.stderr


def test_the_cli_writes_nothing_to_stderr_that_is_not_its_own() -> None:
    """A library's import-time warning (milvus_lite's pkg_resources one) would precede the JSON log lines."""
    result = _cli("--help")
    assert result.returncode == 0 and result.stderr == ""


def _validate_warnings(path: Path) -> list[str]:
    """`validate PATH` accepts the file; its warnings, each without the `PATH: warning: ` prefix."""
    result = _cli("validate", str(path))
    assert result.returncode == 0, result.stderr
    return [line.removeprefix(f"{path}: warning: ") for line in result.stdout.splitlines() if ": warning: " in line]


def _broken(tmp_path: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    data = yaml.safe_load(SHIPPED.read_text())
    edit(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_every_field_error_is_reported_with_file_and_key_path(tmp_path: Path) -> None:
    def edit(d: dict) -> None:
        d["server"]["port"] = "fifty"
        d["models"]["qwen3-4b"]["pricing"]["prompt_per_1m"] = -1
        d["categories"][0]["use_reasonin"] = True

    path = _broken(tmp_path, edit)
    result = _cli("validate", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{path}: server.port:" in result.stderr
    assert f"{path}: models.qwen3-4b.pricing.prompt_per_1m:" in result.stderr
    assert f"{path}: categories.0.use_reasonin: unknown key (did you mean 'use_reasoning'?)" in result.stderr


def test_a_file_that_is_not_utf8_is_one_line_naming_the_file_and_the_byte(tmp_path: Path) -> None:
    """A Latin-1 `é` (an editor's legacy encoding) ended `validate` with a UnicodeDecodeError traceback."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes(SHIPPED.read_text().replace("\n", "\n# caf\u00e9 du coin\n", 3).encode("latin-1"))
    result = _cli("validate", str(path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"{path}: <root>: not UTF-8: byte 0xe9 on line 2; save the file as UTF-8"]


def test_an_unknown_key_names_a_close_one_or_every_allowed_one(tmp_path: Path) -> None:
    """pydantic's "Extra inputs are not permitted" told an operator neither what was wrong nor what to write."""
    def edit(d: dict) -> None:
        d["semantic-cache"] = d.pop("semantic_cache")
        d["models"]["gpt-oss-120b"]["retry"]["retries"] = 3
        d["server"]["colour"] = "blue"

    path = _broken(tmp_path, edit)
    lines = _cli("validate", str(path)).stderr.splitlines()
    assert f"{path}: semantic-cache: unknown key (did you mean 'semantic_cache'?)" in lines
    assert f"{path}: models.gpt-oss-120b.retry.retries: unknown key (did you mean 'num_retries'?)" in lines
    assert (f"{path}: server.colour: unknown key (allowed: host, port, metrics_port, max_body_bytes, "
            "selection_header, workers)") in lines


def test_the_errors_an_operators_trial_met_say_what_to_write(tmp_path: Path) -> None:
    """An operator's trial (2026-12-01): `cache: false` got "Input should be a valid dictionary or instance of
    CategoryCache", an endpoint written as a URL got pydantic's type jargon (and as an `address` it said OK, then
    Envoy refused to start), and a category's `jailbreak_status` under `classifier:` was told to mean
    `jailbreak_action`, which it does not."""
    def edit(d: dict) -> None:
        d["categories"][0]["cache"] = False
        d["models"]["qwen3-4b"]["endpoints"] = ["http://10.0.0.5:8000"]
        d["models"]["gpt-oss-120b"]["endpoints"] = [{"address": "http://10.0.0.6", "port": 8002}]
        d["classifier"]["jailbreak_status"] = 451

    path = _broken(tmp_path, edit)
    result = _cli("validate", str(path))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert (f"{path}: categories.0.cache: expected a mapping with keys enabled, similarity_threshold, "
            "verifier_threshold, ttl_seconds, not false (to switch it off write {enabled: false})") in lines
    assert (f"{path}: models.qwen3-4b.endpoints.0: an endpoint is a host and a port, not a URL: write "
            "{address: 10.0.0.5, port: 8000}") in lines
    assert (f"{path}: models.gpt-oss-120b.endpoints.0: an endpoint is a host and a port, not a URL: write "
            "{address: 10.0.0.6, port: 8002}") in lines
    assert (f"{path}: classifier.jailbreak_status: unknown key here "
            "(it is written at categories[].jailbreak_status)") in lines


def test_more_fallbacks_than_models_is_a_warning(tmp_path: Path) -> None:
    def edit(d: dict) -> None:
        d["fallback"]["max_fallbacks"] = 4

    path = _broken(tmp_path, edit)
    result = _cli("validate", str(path))
    assert result.returncode == 0, result.stderr
    assert (f"{path}: warning: fallback.max_fallbacks: 4 but there are 2 models, so a chain holds at most 1 more"
            in result.stdout.splitlines())


def test_validate_against_the_running_config_says_whether_a_hot_reload_applies(tmp_path: Path) -> None:
    """An operator's trial: whether an edit needed a restart could not be told beforehand (a category's new model
    order can add a fallback chain's Envoy cluster); and models merely reordered in the file changed the generated
    Envoy config, so such a reload was refused."""
    def add_model(d: dict) -> None:
        d["models"]["qwen3-8b"] = {"endpoints": [{"port": 8003}]}
        d["categories"][-1]["model_scores"].insert(0, {"model": "qwen3-8b", "score": 0.95})

    data = yaml.safe_load(SHIPPED.read_text())
    data["models"] = dict(reversed(list(data["models"].items())))
    (reordered := tmp_path / "reordered.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    applied = _cli("validate", str(reordered), "--against", str(SHIPPED))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines()[-1].endswith(f"a router serving {SHIPPED} applies it as a hot reload")
    refused = _cli("validate", str(_broken(tmp_path, add_model)), "--against", str(SHIPPED))
    assert refused.returncode == 3
    assert "changes Envoy's config (clusters added: " in refused.stderr and "qwen3-8b" in refused.stderr
    assert f"a router serving {SHIPPED} would refuse it as a hot reload" in refused.stderr


def test_a_key_written_twice_is_refused_naming_it_and_both_lines(tmp_path: Path) -> None:
    """YAML keeps the last of two equal keys: a second `gpt-oss-120b:` block replaced the first's endpoints,
    pricing and PII policy and validate said OK; nested duplicates (`use_reasoning` twice) too (trial 13)."""
    text = SHIPPED.read_text().replace(
        "\nmodels:\n", "\nmodels:\n  gpt-oss-120b:\n    endpoints: [{port: 9000}]\n", 1).replace(
        "    use_reasoning: true\n", "    use_reasoning: true\n    use_reasoning: false\n", 1)
    (path := tmp_path / "dup.yaml").write_text(text)
    lines = text.splitlines()
    first, second = [i + 1 for i, line in enumerate(lines) if line.startswith("  gpt-oss-120b:")]
    reasoning = next(i + 1 for i, line in enumerate(lines) if line == "    use_reasoning: true")
    result = _cli("validate", str(path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        (f"{path}: models.gpt-oss-120b: duplicate key 'gpt-oss-120b' on lines {first} and {second}: YAML would keep "
        "only the last; merge them or rename one"),
        (f"{path}: categories.0.use_reasoning: duplicate key 'use_reasoning' on lines {reasoning} and {reasoning + 1}: "
        "YAML would keep only the last; merge them or rename one")]
    with pytest.raises(ConfigError, match="duplicate key 'gpt-oss-120b'"):
        load_config(path)  # what serve and a hot reload read


def test_validate_against_names_the_changed_keys_only_a_restart_applies(tmp_path: Path) -> None:
    """trial13 finding 7: `server.workers: 2 -> 3` was "applies it as a hot reload", and the workers stayed 2."""
    def edit(d: dict) -> None:
        d["server"]["workers"] = 3
        d["server"]["metrics_port"] = 9191
        d["routing"]["score_margin"] = 0.1

    result = _cli("validate", str(path := _broken(tmp_path, edit)), "--against", str(SHIPPED))
    assert result.returncode == 3
    assert result.stderr.splitlines() == [
        (f"{path}: a router serving {SHIPPED} applies it as a hot reload except server.metrics_port, server.workers, "
        "which it reads at start only: restart the router for them")]


def test_dangling_references_are_reported(tmp_path: Path) -> None:
    def edit(d: dict) -> None:
        d["default_model"] = "missing"
        d["keyword_rules"][0]["category"] = "astrology"

    result = _cli("validate", str(_broken(tmp_path, edit)))
    assert "default_model: unknown model 'missing'" in result.stderr
    assert "keyword_rules.0.category: unknown category 'astrology'" in result.stderr


EVERY = "so it would send every request to 'computer science'"  # the shipped config's keyword_rules.1


@pytest.mark.parametrize(("key", "pattern", "said"), [
    # Trial 13: each passed validate and a hot reload, then took every request at confidence 1.0.
    ("keywords", "", f"keyword '' is blank, {EVERY}"),
    ("keywords", " ", f"keyword ' ' is blank, {EVERY}"),
    ("regex", "", f"'' matches the empty string, {EVERY}"),
    ("regex", r"\border #?\d{6,}\b|", rf"'\border #?\d{{6,}}\b|' matches the empty string, {EVERY}"),
    ("regex", "a*", f"'a*' matches the empty string, {EVERY}"),
    ("regex", r"\b", rf"'\b' matches the empty string, {EVERY}"),
    ("regex", r"\s+", r"'\s+' matches a lone space, so it would send every request of two words to 'computer science'"),
    # RE2 refuses what needs backtracking; Python's own position when the pattern is no regex at all.
    ("regex", r"(\w+) \1", r"'(\w+) \1' is not RE2 syntax (invalid escape sequence: \1): keyword rules use RE2"),
    ("regex", r"prove(?! my)", "'prove(?! my)' is not RE2 syntax (invalid perl operator: (?!): keyword rules use RE2"),
    ("regex", r"\border #?(\d{6,}\b",
     r"'\border #?(\d{6,}\b' is not a valid regex: missing ), unterminated subpattern at position 10"),
])
def test_a_keyword_pattern_that_would_match_every_request_or_is_not_re2_is_refused_by_name(
        key: str, pattern: str, said: str) -> None:
    data = yaml.safe_load(SHIPPED.read_text())
    data["keyword_rules"][1][key].append(pattern)
    at = len(data["keyword_rules"][1][key]) - 1
    with pytest.raises(ConfigError) as err:
        parse_config(data, "fleet.yaml")
    assert f"fleet.yaml: keyword_rules.1.{key}.{at}: {said}" in str(err.value).splitlines()[0]


@pytest.mark.parametrize("pattern", [r"^\s*hello\b", r"(?m)^import \w+", r"colou?r", r"\x{221a}\d+", r"(a+)+$"])
def test_keyword_patterns_that_need_text_to_match_are_accepted(pattern: str) -> None:
    data = yaml.safe_load(SHIPPED.read_text())
    data["keyword_rules"][1]["regex"].append(pattern)
    assert parse_config(data).keyword_rules[1].regex[-1] == pattern


def test_the_trial_s_empty_alternative_is_refused_by_validate_naming_the_pattern(tmp_path: Path) -> None:
    def edit(d: dict) -> None:
        d["keyword_rules"][0]["regex"] = [r"\border #?\d{6,}\b|"]

    path = _broken(tmp_path, edit)
    result = _cli("validate", str(path))
    assert result.returncode == 1
    assert result.stderr.strip() == (rf"{path}: keyword_rules.0.regex.0: '\border #?\d{{6,}}\b|' matches the empty "
                                     "string, so it would send every request to 'math'")


def test_a_default_category_that_names_no_category_is_refused_with_the_one_meant(tmp_path: Path) -> None:
    """validate said OK and a reload applied it: every low-confidence request then went to no category at all."""
    def edit(d: dict) -> None:
        d["default_category"] = "otherr"
        d["categories"][0]["model_scores"][0]["model"] = "qwen3-4bb"

    path = _broken(tmp_path, edit)
    result = _cli("validate", str(path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{path}: categories.0.model_scores.0.model: unknown model 'qwen3-4bb' (did you mean 'qwen3-4b'?)",
        f"{path}: default_category: unknown category 'otherr' (did you mean 'other'?)"]


def test_validate_warns_of_a_category_nothing_can_choose_and_of_reasoning_nothing_switches(tmp_path: Path) -> None:
    """An operator's trial: `health` renamed `medicine` and a `code` category without examples both said OK, and
    every medical question went to the default category; `use_reasoning` on a model with no reasoning family said OK
    and sent nothing while the response header claimed reasoning was on."""
    def edit(d: dict) -> None:
        health = next(c for c in d["categories"] if c["name"] == "health")
        health["name"] = "medicine"
        d["categories"].append({"name": "code", "model_scores": [{"model": "qwen3-4b", "score": 1.0}]})
        d["categories"].append({"name": "greetings", "examples": ["hello there"],
                                "model_scores": [{"model": "qwen3-4b", "score": 1.0}]})
        d["models"]["gpt-oss-120b"].pop("reasoning_family")
        health.update(use_reasoning=True, model_scores=[{"model": "gpt-oss-120b", "score": 1.0}])

    path = _broken(tmp_path, edit)
    result = _cli("validate", str(path))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if ": warning: " in line]
    assert any("'medicine' can never be chosen: it is not a classifier category" in w and "health" in w
               for w in warnings), result.stdout
    assert any("'code' can never be chosen" in w for w in warnings)
    assert not any("greetings" in w for w in warnings)  # its examples choose it
    assert any(".use_reasoning: none of its models has a reasoning_family" in w for w in warnings)
    assert result.stdout.splitlines()[-1].endswith(f"{len(warnings)} warnings)")


def test_a_keyword_an_earlier_rule_of_another_category_holds_is_warned_of(tmp_path: Path) -> None:
    """trial13 finding 8d: the same keyword in two rules validated clean, and the later rule's category never got it."""
    def edit(d: dict) -> None:
        d["keyword_rules"].append({"category": "physics", "keywords": ["Differential Equation", "kinematics"]})
        d["keyword_rules"].append({"category": "math", "keywords": ["recursion"], "regex": ["\\bmodular\\b"]})

    path = _broken(tmp_path, edit)
    warnings = _validate_warnings(path)
    n = len(yaml.safe_load(path.read_text())["keyword_rules"])
    assert warnings == [
        (f"keyword_rules.{n - 2}.keywords.0: 'Differential Equation' is also a keyword of keyword_rules.0 ('math'), "
         "which is tried first, so it never routes to 'physics' (keep it in one rule)"),
        (f"keyword_rules.{n - 1}.keywords.0: 'recursion' is also a keyword of keyword_rules.1 ('computer science'), "
         "which is tried first, so it never routes to 'math' (keep it in one rule)"),
    ]


def test_validate_warns_of_settings_trial13_found_could_not_act(tmp_path: Path) -> None:
    """trial13 findings 3 and 8: each of these said a plain OK. A tenant header the generated Envoy config strips
    from clients never arrives (one key's tenants shared cached answers); a category's `block` under a fleet-wide
    `flag` is never applied; an effort on a `chat_template_kwargs` family is never sent; a model listed twice is
    ranked by one score and priced by the other."""
    def edit(d: dict) -> None:
        d["semantic_cache"]["tenant_headers"] = ["x-tenant-id"]
        d["classifier"]["jailbreak_action"] = "flag"
        cats = {c["name"]: c for c in d["categories"]}
        cats["law"]["jailbreak_action"] = "block"
        cats["health"]["jailbreak_action"] = "flag"  # what the fleet-wide flag does anyway: no warning
        cats["history"].update(use_reasoning=True, reasoning_effort="low",
                               model_scores=[{"model": "qwen3-4b", "score": 0.7}])
        cats["math"]["reasoning_effort"] = "medium"  # gpt-oss is a reasoning_effort family: sent, no warning
        cats["business"]["model_scores"].append({"model": "qwen3-4b", "score": 0.2})

    path = _broken(tmp_path, edit)
    warnings = _validate_warnings(path)
    names = [c["name"] for c in yaml.safe_load(path.read_text())["categories"]]
    law, history, business = (names.index(n) for n in ("law", "history", "business"))
    assert warnings == [
        (f"categories.{law}.jailbreak_action: block cannot act: classifier.jailbreak_action is flag, and a category's "
        "own action applies only under block"),
        (f"categories.{business}.model_scores: 'qwen3-4b' is listed 2 times (scores 0.7, 0.2): the ranking and the price "
        "choice each read a different one; keep one"),
        (f"categories.{history}.reasoning_effort: low is never sent: it goes only with use_reasoning: true to a model of "
        "a reasoning_effort family (a chat_template_kwargs family switches thinking on or off only)"),
        ("semantic_cache.tenant_headers: Envoy's generated config removes x-tenant-id from every client request, so the "
        "router sees it only when an auth filter added to Envoy's http_filters before ext_proc sets it from a verified "
        "credential (README, \"Identity headers from an auth filter\"); without one the identity falls back to the "
        "API key")]


def test_a_cache_ttl_of_zero_is_refused(tmp_path: Path) -> None:
    """trial13 finding 8f: `ttl_seconds: 0` stored every answer already expired, never served, each request a plain
    `miss`; 0 reads as "no cache" to some and "forever" to others."""
    def edit(d: dict) -> None:
        d["categories"][0]["cache"] = {"ttl_seconds": 0}

    path = _broken(tmp_path, edit)
    result = _cli("validate", str(path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [(f"{path}: categories.0.cache.ttl_seconds: must be at least 1 second: 0 "
                                          "would store answers that are never served (to cache nothing here, write "
                                          "enabled: false)")]


def test_the_shipped_config_has_no_warnings() -> None:
    assert ": warning: " not in _cli("validate", str(SHIPPED)).stdout


def test_the_domain_categories_the_config_checks_are_the_shipped_heads_labels() -> None:
    import numpy as np

    from router.classifier.heads import HEADS_DIR
    from router.signals import DOMAIN_CATEGORIES

    with np.load(HEADS_DIR / "domain.npz") as head:
        assert tuple(str(label) for label in head["labels"]) == DOMAIN_CATEGORIES


def test_an_unknown_pii_type_in_a_models_allow_list_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    """`pii_types_allowed: [EMAIL]` was accepted: the operator meant to let e-mail addresses reach the model, and
    every request with one was moved off it, since no finding is ever typed EMAIL."""
    def edit(d: dict) -> None:
        d["models"]["gpt-oss-120b"]["pii_policy"]["pii_types_allowed"] = ["EMAIL", "PERSON"]

    path = _broken(tmp_path, edit)
    result = _cli("validate", str(path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        (f"{path}: models.gpt-oss-120b.pii_policy.pii_types_allowed: unknown PII type 'EMAIL' (known: PERSON, "
         "STREET_ADDRESS, CREDIT_CARD, IBAN_CODE, US_SSN, EMAIL_ADDRESS, PHONE_NUMBER, IP_ADDRESS, DATE_OF_BIRTH, "
         "ID_NUMBER)")]


def test_a_default_category_left_out_may_name_no_category() -> None:
    """Left out, low-confidence requests go to default_model (the policy's answer for no category)."""
    cfg = parse_config({"default_model": "m", "models": {"m": {"endpoints": [{"port": 8001}]}},
                        "categories": [{"name": "math", "model_scores": [{"model": "m", "score": 1}]}]})
    assert cfg.default_category == "other" and cfg.category("other") is None
    with pytest.raises(ConfigError) as err:
        parse_config({"default_model": "m", "models": {"m": {"endpoints": [{"port": 8001}]}},
                      "default_category": "general"})
    assert err.value.problems == [("default_category", "unknown category 'general'")]


def test_a_value_outside_a_union_gets_one_plain_message(tmp_path: Path) -> None:
    def edit(d: dict) -> None:
        d["server"]["workers"] = "many"

    path = _broken(tmp_path, edit)
    lines = _cli("validate", str(path)).stderr.splitlines()
    assert lines == [f"{path}: server.workers: must be 'auto' or a number of router processes from 1 to 64"]


@pytest.mark.parametrize("name", ["semantic_router_production_cache_v2.db", "my cache.db"])
def test_a_milvus_lite_file_name_milvus_lite_refuses_is_refused_by_validate(tmp_path: Path, name: str) -> None:
    """validate said OK; milvus_lite then refused the name (RuntimeError: at most 36 letters, digits, '.', '-', '_')
    on every connect, logged as cache_lookup_bug, and its Server's __del__ printed a plain-text traceback."""
    def edit(d: dict) -> None:
        d["semantic_cache"]["uri"] = f"var/cache/{name}"

    path = _broken(tmp_path, edit)
    lines = _cli("validate", str(path)).stderr.splitlines()
    problem = f"Milvus Lite takes a file name of at most 36 letters, digits, '.', '-' and '_', not {name!r}"
    assert lines == [f"{path}: semantic_cache.uri: {problem}"]
    server = _broken(tmp_path, lambda d: d["semantic_cache"].update(uri=f"http://milvus:19530/{name}"))
    assert _cli("validate", str(server)).returncode == 0  # a server's address is no file name


def test_a_dangling_reference_under_a_hyphenated_name_keeps_its_key_path(tmp_path: Path) -> None:
    def edit(d: dict) -> None:
        d["models"]["qwen3-4b"]["reasoning_family"] = "qwen"

    path = _broken(tmp_path, edit)
    lines = _cli("validate", str(path)).stderr.splitlines()
    assert lines == [f"{path}: models.qwen3-4b.reasoning_family: unknown family 'qwen' (did you mean 'qwen3'?)"]  # it was under <root>


def test_validate_refuses_a_model_dir_a_reload_would_refuse(tmp_path: Path) -> None:
    """validate said OK, then the router's reload was rejected with runtime_build_failed (walkthrough)."""
    def edit(d: dict) -> None:
        d["classifier"]["model_dir"] = "models/nope"

    path = _broken(tmp_path, edit)
    result = _cli("validate", str(path))
    assert result.returncode == 1
    assert result.stderr.startswith(f"{path}: classifier.model_dir: models/nope/model_int8.onnx or ")
    disabled = _broken(tmp_path, lambda d: d["classifier"].update(model_dir="models/nope", enabled=False))
    assert _cli("validate", str(disabled)).returncode == 0  # nothing loads it then


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("models:\n  a: [unclosed\n")
    result = _cli("validate", str(path))
    assert result.returncode == 1 and "line 3" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(("text", "said"), [
    ("categories:\n  - name: math\n    model_scores: []\n  use_reasoning: true\n    sticky: false\n",
     ("line 4, column 3: expected <block end>, but found '?' (this line is indented unlike the block above it: a key "
     "starts in the same column as the other keys of its mapping)")),
    ("server:\n\tport: 1\n", ("line 2, column 1: found character '\\t' that cannot start any token (YAML indents with "
     "spaces, not tabs)")),
])
def test_a_yaml_slip_is_said_as_the_slip(tmp_path: Path, text: str, said: str) -> None:
    """trial13 finding 9: "expected <block end>, but found '?'" for a key indented two spaces too few."""
    (path := tmp_path / "bad.yaml").write_text(text)
    assert _cli("validate", str(path)).stderr.splitlines() == [f"{path}: <root>: invalid YAML: {said}"]


def test_generated_envoy_config_passes_envoy_validate(tmp_path: Path) -> None:
    out = tmp_path / "envoy.yaml"
    out.write_text(render(load_config(SHIPPED)))
    envoy = Path(sys.executable).parent / "envoy"
    result = subprocess.run([str(envoy), "--mode", "validate", "-c", str(out)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]


def test_committed_envoy_config_is_up_to_date() -> None:
    assert (ROOT / "envoy" / "envoy.yaml").read_text() == render(load_config(SHIPPED))


def test_trusted_proxy_hops_reach_envoys_connection_manager() -> None:
    """Behind an ingress Envoy must read the client's address from X-Forwarded-For (it scopes an anonymous caller's
    memo); every caller had the ingress's address. Unset, Envoy is the edge; more than 10 is a typo."""
    def hcm(**envoy: int) -> dict[str, Any]:
        data = yaml.safe_load(SHIPPED.read_text())
        data["envoy"].pop("trusted_proxy_hops", None)
        data["envoy"].update(envoy)
        listener = envoy_config(parse_config(data))["static_resources"]["listeners"][0]
        return listener["filter_chains"][0]["filters"][0]["typed_config"]  # type: ignore[no-any-return]

    edge, behind_two = hcm(), hcm(trusted_proxy_hops=2)
    assert (edge["use_remote_address"], edge["xff_num_trusted_hops"]) == (True, 0)
    assert (behind_two["use_remote_address"], behind_two["xff_num_trusted_hops"]) == (True, 2)
    with pytest.raises(ConfigError, match="envoy.trusted_proxy_hops"):
        hcm(trusted_proxy_hops=11)


def test_envoy_wheel_and_ext_proc_stubs_coexist() -> None:
    """Both packages own the top-level `envoy` package; both must still work."""
    from envoy.service.ext_proc.v3 import external_processor_pb2  # noqa: F401

    envoy = Path(sys.executable).parent / "envoy"
    assert "1.40" in subprocess.run([str(envoy), "--version"], capture_output=True, text=True, check=False).stdout


@pytest.mark.parametrize("command", [["serve"], ["validate"], ["envoy-config"], ["classify"], ["cache", "stats"],
                                     ["cache", "invalidate"], ["cache", "purge-expired"]])
def test_every_subcommand_says_which_config_it_reads(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """`--config CONFIG` with no word on it left a new user guessing what runs without the flag."""
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--help"])
    assert "default: config/config.yaml" in " ".join(capsys.readouterr().out.split())


def _schema_keys(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Every setting a config file may hold (sections are implied by their keys), as the reference spells it
    (`models.NAME.x`, `categories[].x`)."""
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        kind = field.annotation
        while get_origin(kind) in (Annotated, Union, types.UnionType):  # `X | None`, `Annotated[X, ...]`
            kind = next(a for a in get_args(kind) if a is not type(None))
        item = get_args(kind)[-1] if get_origin(kind) in (list, dict) else None
        if _is_section(item):  # a list or map of sections: `categories[].name`, `models.NAME.cluster`
            kind, path = item, path + ("[]" if get_origin(kind) is list else ".NAME")
        if _is_section(kind):
            yield from _schema_keys(kind, f"{path}.")
        else:
            yield path


def _is_section(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, BaseModel)


def _reference_rows() -> list[tuple[set[str], set[str]]]:
    """README's configuration reference: per table row, the keys its first cell names (and their parents, so that a row
    on `fallback.*` or `server.host` covers siblings), and every word written in backticks anywhere in the row."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration reference\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        first = line.split("|")[1]
        named = {token.removesuffix(".*").replace("[]", "") for token in re.findall(r"`([^`]+)`", first)}
        parents = named | {token.rsplit(".", 1)[0] for token in named if "." in token}
        words = set(re.findall(r"\w+", " ".join(re.findall(r"`([^`]+)`", line))))
        rows.append((parents, words))
    return rows


def test_every_config_key_is_in_the_readme_reference() -> None:
    """A key missing there is one an operator writing their own file cannot find (observability.metrics_host was: the
    Kubernetes overlay sets 0.0.0.0, a hand-written manifest kept 127.0.0.1 and its probes failed)."""
    rows = _reference_rows()

    def documented(key: str) -> bool:
        parent, _, name = key.replace("[]", "").rpartition(".")
        return any(parent in parents and name in words if parent else key in parents for parents, words in rows)

    missing = [key for key in _schema_keys(RouterConfig) if not documented(key)]
    assert not missing, f"README.md 'Configuration reference' lacks: {', '.join(missing)}"
