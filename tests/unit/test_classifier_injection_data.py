"""Jailbreak sources read from package data files with `ast`: literals and known string constants only."""

from __future__ import annotations

import ast

import pytest

from offline.injection_data import _literal


def expr(text: str) -> ast.expr:
    return ast.parse(text, mode="eval").body


def test_literal_joins_constants_fstrings_and_dicts() -> None:
    names = {"CANARY": "OK-1"}
    assert _literal(expr("[{'prompt': 'say ' + CANARY + '!', 'note': 'x'}]"), names) == [
        {"prompt": "say OK-1!", "note": "x"}
    ]
    assert _literal(expr("f'print {CANARY} now'"), names) == "print OK-1 now"


@pytest.mark.parametrize(
    "source", ["f'{os.system}'", "open('x').read()", "UNKNOWN + 'a'", "[c for c in 'ab']"]
)
def test_literal_refuses_anything_that_would_run_code(source: str) -> None:
    with pytest.raises(ValueError):
        _literal(expr(source), {"CANARY": "OK-1"})
