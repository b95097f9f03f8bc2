"""Where a long text's unread middle may hold a street address: the places the PII head reads it around."""

from __future__ import annotations

import pytest

from router.classifier.address_shapes import address_candidates


@pytest.mark.parametrize("text", [
    "Ship it to 742 Evergreen Terrace, Springfield.",
    "Meine Adresse: Hauptstraße 5, 10115 Berlin",
    "The bus station is on Oliver Loop",
    "lives at 28, avenue de Leroy, Colin",
    "The restaurant is at 442 R. de Vasco da Gama",
    "The bus station is on Anne-Kathrin-Kensy-Weg",
    "The title refers to Etzlerstr. in Augsburg",
    "User: 313\nKhurana Zila Raichur 990957",
])
def test_an_address_shape_is_a_candidate(text: str) -> None:
    assert address_candidates(text, 0, len(text))


@pytest.mark.parametrize("text", [
    "def handler(event):\n    return {'status': event.get('status', 200)}\n",
    "from typing import Union\nx: Union[str, Path] = Path('a')\n",
    "    raise ValueError('bad value')  # see RFC 9110, section 15.5\n",
    "INFO:     Uvicorn running on http://127.0.0.1:8000 (Press CTRL+C to quit)\n",
    "Sharing a SequenceNotStr[str] via the keyword-only args\n",
])
def test_ordinary_code_and_logs_hold_no_candidate(text: str) -> None:
    """A middle without a candidate is screened for addresses at no encoder cost: most code and logs."""
    assert address_candidates(text, 0, len(text)) == []


def test_only_the_given_range_is_scanned() -> None:
    text = "742 Evergreen Terrace " + "plain words " * 20 + "12 Baker Street"
    assert address_candidates(text, len("742 Evergreen Terrace"), len(text) - len("12 Baker Street")) == []
    assert {0, len(text) - len("12 Baker Street")} <= set(address_candidates(text, 0, len(text)))
