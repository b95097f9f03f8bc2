"""PII figures on the dev sets only, for choosing a change before the test figures of bench/pii_eval.py are run once.

    PYTHONPATH=$PWD .venv/bin/python bench/pii_dev.py --out FILE   # on main and on the change; compare the two files

Sets: training templates (not the held-out ones) filled at a Faker seed neither training nor pii_eval uses, the chat
dev names, public figures and negatives (offline.pii_chat), 1,500 training-subject MMLU questions, the homework dev
questions, the product dev questions (drugs, brands, cases) and their private-name look-alikes. FILE also holds every text's PERSON and STREET_ADDRESS findings, so two runs can be diffed text by text.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from offline import pii_chat, pii_data
from offline.pii_eval import HELDOUT_FRACTION, TRAIN_SEED, flag_rate, score
from router.classifier.encoder import Encoder
from router.classifier.pii import PERSON, STREET_ADDRESS, detect_pii
from router.signals import PIIFinding

DEV_SEED = 777


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "minilm")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "var" / "pii")
    parser.add_argument("--per-template", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    encoder = Encoder(args.model_dir, threads=1)
    found: dict[str, list[tuple[str, str]]] = {}

    def detect(text: str) -> tuple[PIIFinding, ...]:
        findings = detect_pii(text, encoder.encode(text))
        found[text] = [(f.type, text[f.start : f.end]) for f in findings if f.type in (PERSON, STREET_ADDRESS)]
        return findings

    templates = pii_data.load_templates(pii_data.templates_path(args.cache_dir))
    fit, _ = pii_data.split_templates(len(templates), TRAIN_SEED, HELDOUT_FRACTION)
    spans = score(pii_data.generate(templates, fit, args.per_template, DEV_SEED), detect, [PERSON, STREET_ADDRESS])
    names, figures = pii_chat.read_dev()
    negatives = pii_chat.dev_negatives()
    homework = pii_chat.read_homework("dev")
    products, lookalikes = pii_chat.read_products("dev")
    result = {
        "dev_template_recall": {kind: round(m["recall"], 4) for kind, m in spans.items()},
        "dev_template_precision": {kind: round(m["precision"], 4) for kind, m in spans.items()},
        "dev_names_recall": round(score(names, detect, [PERSON])[PERSON]["recall"], 4),
        "dev_public_figures_flagged": [sum(bool(detect(t)) for t in figures), len(figures)],
        "dev_negatives_flagged": [sum(bool(detect(t)) for t in negatives), len(negatives)],
        "mmlu_training_subjects_flag_rate": flag_rate(pii_data.benign_questions(args.cache_dir, heldout=False)[:1500],
                                                      detect),
        "homework_dev_flagged": [sum(any(f.type in (PERSON, STREET_ADDRESS) for f in detect(t)) for t in homework),
                                 len(homework)],
        "products_dev_flagged": [sum(any(f.type == PERSON for f in detect(t)) for t in products), len(products)],
        "products_dev_private_names_recall": round(score(lookalikes, detect, [PERSON])[PERSON]["recall"], 4),
    }
    print(json.dumps(result, indent=1))
    args.out.write_text(json.dumps({"result": result, "found": found}, ensure_ascii=False, indent=1) + "\n")


if __name__ == "__main__":
    main()
