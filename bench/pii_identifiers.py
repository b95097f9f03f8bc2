"""Dates of birth and cue-named identifiers (DATE_OF_BIRTH, ID_NUMBER; router/classifier/README.md, "Dates of birth and
identifiers"): recall and look-alikes on the written dev prompts, false alarms on real chat, and the validators' cost.

    PYTHONPATH=$PWD .venv/bin/python bench/pii_identifiers.py [--sharegpt] [--trials] [--repeats 15]

Default: offline/data/pii_identifiers_dev.jsonl per family, then `find_structured`'s p50 on a short prompt and on
128k characters of Python source and of prose full of cue words. --sharegpt: every new-type finding in ShareGPT's
train and dev user turns (each distinct text once) and the count of every type, to read. --trials: the identifier
prompts of trials 17 and 19 (their worktrees), found per kind. Run it with PYTHONPATH on another checkout for "before".
"""

from __future__ import annotations

import argparse
import collections
import csv
import glob
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from router.classifier.canonical import canonical
from router.classifier.pii_rules import find_structured

ROOT = Path(__file__).resolve().parents[1]
NEW = ("DATE_OF_BIRTH", "ID_NUMBER")
TRIAL17, TRIAL19 = Path("/work/wt-trial17/trial"), Path("/work/wt-trial19/trial")


def found(text: str) -> list[tuple[str, str]]:
    plain = canonical(text)
    return [(f.type, plain[f.start : f.end]) for f in find_structured(plain)]


def dev_sets() -> None:
    hits, counts = collections.Counter[str](), collections.Counter[str]()
    for line in (ROOT / "offline" / "data" / "pii_identifiers_dev.jsonl").read_text().splitlines():
        row = json.loads(line)
        new = [f for f in found(row["text"]) if f[0] in NEW]
        counts[row["family"]] += 1
        hits[row["family"]] += bool(new)
        if bool(new) != row["pii"]:
            print("missed" if row["pii"] else "false alarm", new, row["text"])
    for family, n in counts.items():
        print(f"{family}: {hits[family]} of {n} flagged")


def sharegpt() -> None:
    from offline.chat_data import DEV, TRAIN, sharegpt_records, sharegpt_split

    seen: set[str] = set()
    types = collections.Counter[str]()
    for record in sharegpt_records():
        if sharegpt_split(str(record["id"]).rsplit("_", 1)[0]) not in (TRAIN, DEV):
            continue
        for turn in record.get("conversations", []):
            text = turn.get("value")
            if turn.get("from") != "human" or not isinstance(text, str) or not text.strip() or text in seen:
                continue
            seen.add(text)
            for kind, value in found(text):
                types[kind] += 1
                if kind in NEW:
                    print(record["id"], kind, repr(value))
    print(f"{len(seen)} distinct user turns; findings by type: {dict(types)}")


def trials() -> None:
    got = collections.defaultdict(lambda: [0, 0])

    def count(kind: str, text: str, want: str) -> None:
        got[kind][1] += 1
        got[kind][0] += want in {k for k, _ in found(text)}

    wants = {"dob": "DATE_OF_BIRTH", "mrn": "ID_NUMBER", "member": "ID_NUMBER"}
    for row in map(json.loads, (TRIAL17 / "phi_notes.jsonl").read_text().splitlines()):
        for kind in row["kinds"]:
            if kind in wants:
                count(f"trial 17 notes {kind}", row["prompt"], wants[kind])
    with (TRIAL17 / "identifier_formats.tsv").open() as fh:
        for kind, text in csv.reader(fh, delimiter="\t"):
            if kind in wants:
                count(f"trial 17 formats {kind}", text, wants[kind])
    wants19 = {"itin": "ID_NUMBER", "ein": "ID_NUMBER", "passport": "ID_NUMBER", "dob_name": "DATE_OF_BIRTH"}
    for row in map(json.loads, (TRIAL19 / "prompts" / "pii_prompts.jsonl").read_text().splitlines()):
        if row["kind"] in wants19:
            count(f"trial 19 {row['kind']}", row["prompt"], wants19[row["kind"]])
    history = json.loads((TRIAL19 / "prompts" / "ein_history.json").read_text())["messages"]
    count("trial 19 EIN in an earlier turn", "\n".join(m["content"] for m in history), "ID_NUMBER")
    for kind, (hit, n) in got.items():
        print(f"{kind}: {hit} of {n}")


def p50_ms(call: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 3)


def cost(repeats: int) -> None:
    sources = sorted(glob.glob(str(ROOT / ".venv" / "lib" / "python3*" / "site-packages" / "openai" / "resources" / "*.py")))
    code = canonical("".join(Path(f).read_text(errors="replace") for f in sources[:30])[:128_000])
    prose = canonical(("The member account record for the patient and employee policy was updated; the student born in "
                       "the tax year reviewed chart 12 and record 7 of 2019. ") * 900)[:128_000]
    short = canonical("Summarize this visit note for the chart: 58F with type 2 diabetes on metformin 1000 mg twice daily.")
    print("find_structured p50 ms:", {"short prompt": p50_ms(lambda: find_structured(short), repeats * 100),
                                      "128k code": p50_ms(lambda: find_structured(code), repeats),
                                      "128k cue-word prose": p50_ms(lambda: find_structured(prose), repeats)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sharegpt", action="store_true")
    parser.add_argument("--trials", action="store_true")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    if args.sharegpt:
        sharegpt()
    elif args.trials:
        trials()
    else:
        dev_sets()
        cost(args.repeats)


if __name__ == "__main__":
    main()
