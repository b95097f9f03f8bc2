"""Multilingual, indirect-injection and small real-attack sources for the jailbreak head, from PyPI wheels.

The sentence head missed attacks written in another language and instructions hidden in documents. Sources:
  garak-multilingual       injections and jailbreaks in de, es, fr, ru, ar, zh, fa and tr            (train)
  contradish v2_cl         the same benign support questions in es, de, zh (train) and fr, pt      (validation),
                           benign; not its ai_safety file
  hermes-jailbench         attack templates: identity override, extraction, encoding, multilingual  (train)
  chatterbot-corpus        greetings and small talk in 28 languages, 3/4 of its files               (train, benign)
                           and the other 1/4                                                        (test, reported apart)
  agent-injection-bench    indirect attacks as an agent sees them (task, then tool result); its
                           'control' rows are benign                                                (validation)
  jailbreak-corpus-mini    short injection, leak and role-hijack prompts                            (validation)
  agentprobe-injection     benign asks about e-mails (dates, action items): documents, no attack    (validation, benign)
  offline/data/train/guard_written.jsonl
                           rows written by hand (helper, 2026-11-30, before any dev or test row was read):
                           jailbreaks in plain styles that are not role-play templates, and benign hard negatives
                           (security, medicine, history, fiction, "kill a process")     (train, jailbreak head)
                           Its plain harmful requests are benign rows of the jailbreak head only (guard_data):
                           as positives of the content-safety head they did not lift its dev recall

Package code is never imported: Python data files are read with `ast`, and only string literals and
concatenations over the module's own string constants are evaluated.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Iterator

import yaml

from offline.chat_data import DATA, jsonl_rows
from offline.train_data import Example, package_wheel
from router.classifier.heads import BENIGN, JAILBREAK

HELD_OUT_LANGUAGES = ("fr", "pt")
CHAT_LINES_PER_FILE = 40
WRITTEN = DATA / "train" / "guard_written.jsonl"


def _literal(node: ast.expr, names: dict[str, str]) -> object:
    """ast.literal_eval plus f-strings and `+` over the names given (a module's string constants), nothing else."""
    if isinstance(node, ast.JoinedStr):
        return "".join(str(_literal(part, names)) for part in node.values)
    if isinstance(node, ast.FormattedValue):
        return _literal(node.value, names)
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, ast.List):
        return [_literal(item, names) for item in node.elts]
    if isinstance(node, ast.Dict):
        return {
            _literal(k, names): _literal(v, names) for k, v in zip(node.keys, node.values, strict=True) if k
        }
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _literal(node.left, names) + _literal(node.right, names)  # type: ignore[operator]
    return ast.literal_eval(node)


def garak_multilingual() -> Iterator[str]:
    """Turkish and multilingual (de, es, fr, ru, ar, zh, fa) injections and jailbreaks."""
    with package_wheel("garak-multilingual") as wheel:
        tree = ast.parse(wheel.read("garak_multilingual/payloads.py").decode())
    constants = {
        node.targets[0].id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }
    for node in tree.body:
        value = (
            _literal(node.value, constants)
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.List)
            else []
        )
        for item in value if isinstance(value, list) else []:
            if isinstance(item, dict) and "prompt" in item:
                yield item["prompt"]


def contradish_translations() -> Iterator[Example]:
    """Benign support questions in es, de, zh (train) and fr, pt (validation: does the head flag a language?).

    From contradish's cross-lingual consistency benchmark; its ai_safety file is left out as everywhere else.
    """
    with package_wheel("contradish") as wheel:
        names = [
            n for n in wheel.namelist() if "/benchmarks/v2_cl/" in n and not n.endswith("ai_safety.json")
        ]
        for name in sorted(names):
            for case in json.loads(wheel.read(name))["cases"]:
                for language, text in sorted(case["translations"].items()):
                    held_out = language in HELD_OUT_LANGUAGES
                    yield Example(text, BENIGN, "contradish_translations" + ("_held_out" if held_out else ""))


def chatterbot_small_talk() -> Iterator[Example]:
    """Greetings and small talk in 28 languages ("Hi", "Wie geht es dir?"): benign text that is neither a question
    from a benchmark nor English, which the head otherwise scored as an attack ("Hi" scored 0.64-0.73).

    Whole files (one language and topic each) go to train or, one in four by name hash, to validation.
    """
    with package_wheel("chatterbot-corpus") as wheel:
        names = sorted(
            n for n in wheel.namelist() if n.startswith("chatterbot_corpus/data/") and n.endswith(".yml")
        )
        for name in names:
            data = yaml.safe_load(wheel.read(name)) or {}
            lines = [line for talk in data.get("conversations", []) for line in talk if isinstance(line, str)]
            held_out = int(hashlib.sha256(name.encode()).hexdigest(), 16) % 4 == 0
            for line in list(dict.fromkeys(lines))[:CHAT_LINES_PER_FILE]:
                yield Example(line, BENIGN, "chatterbot" + ("_held_out" if held_out else ""))


def agentprobe_benign_tasks() -> Iterator[Example]:
    """Benign asks about e-mails (dates, action items, shipments): documents with no instruction in them."""
    with package_wheel("agentprobe-injection") as wheel:
        tree = ast.parse(wheel.read("agentprobe/injection/benign_tasks.py").decode())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fields = {k.arg: k.value for k in node.keywords}
            if "user_request" in fields and "email_content" in fields:
                request, email = (ast.literal_eval(fields[k]) for k in ("user_request", "email_content"))
                yield Example(f"{request}\n\n{email}", BENIGN, "agentprobe_benign")


def agent_injection_bench() -> Iterator[Example]:
    """Indirect attacks as an agent sees them (the user's task, then the tool result); 'control' rows are benign."""
    with package_wheel("agent-injection-bench") as wheel:
        lines = wheel.read("aib/data/attacks.jsonl").decode().splitlines()
    for row in (json.loads(line) for line in lines if line.strip()):
        label = BENIGN if row["family"] == "control" else JAILBREAK
        yield Example(f"{row['task']}\n\n{row['injected']}", label, "aib")


def hermes_jailbench(target: str) -> Iterator[Example]:
    """Attack templates (`Attack(template=...)` literals) with {TARGET} filled by a harmful goal."""
    with package_wheel("hermes-jailbench") as wheel:
        tree = ast.parse(wheel.read("hermes_jailbench/attacks.py").decode())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Attack":
            template = next((k.value for k in node.keywords if k.arg == "template"), None)
            if template is not None:
                yield Example(
                    str(ast.literal_eval(template)).replace("{TARGET}", target), JAILBREAK, "hermes"
                )


def jailbreak_corpus_mini() -> Iterator[Example]:
    with package_wheel("jailbreak-corpus-mini-py") as wheel:
        for row in json.loads(wheel.read("jailbreak_corpus_mini/corpus.json")):
            yield Example(row["prompt"], JAILBREAK, "corpus_mini")


def jailbreak_arena(harmful: bool) -> Iterator[str]:
    """jailbreak-arena's seed prompts (`Task(seed_prompts=[...])` literals): role hijack, persona, extraction,
    injection and multi-turn seeds, or (harmful=True) its plain harmful-content seeds, for the other guard."""
    with package_wheel("jailbreak-arena") as wheel:
        tree = ast.parse(wheel.read("jailbreak_arena/tasks.py").decode())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Task":
            fields = {k.arg: k.value for k in node.keywords}
            if (ast.literal_eval(fields["attack_type"]) == "harmful") == harmful:
                yield from ast.literal_eval(fields["seed_prompts"])


def attack_signatures(harmful: bool) -> Iterator[str]:
    """agentpromptsentinel's attack phrase list, by its own section comments: override, extraction, persona,
    exfiltration and obfuscation phrases, or (harmful=True) the exploit, malicious-code and harmful-content ones.

    Read line by line (the section names are comments, which the AST drops); only string literals are evaluated.
    """
    with package_wheel("agentpromptsentinel") as wheel:
        lines = wheel.read("agentpromptsentinel/scanners/vector.py").decode().splitlines()
    start = lines.index("DEFAULT_ATTACK_SIGNATURES = [")
    section = ""
    for line in lines[start + 1 : lines.index("]", start)]:
        stripped = line.strip()
        if stripped.startswith("#"):
            section = stripped.lower()
        elif stripped.startswith('"'):
            in_harmful = any(word in section for word in ("exploit", "malicious", "harmful"))
            if in_harmful == harmful:
                yield str(ast.literal_eval(stripped.rstrip(",")))


def written(label: str) -> list[str]:
    """The hand-written guard rows labelled `label` (harmful, jailbreak or benign), in file order."""
    return [row["text"] for row in jsonl_rows(WRITTEN) if row["label"] == label]
