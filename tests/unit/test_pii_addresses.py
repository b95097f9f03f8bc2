"""Complete postal addresses found by shape, numbers that name a section or an order rather than a house or a phone,
and business phone lines: trials 18 (e-commerce) and 19 (legal/tax)."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.classifier.address_shapes import address_candidates, full_addresses
from router.classifier.pii import PERSON, STREET_ADDRESS, detect_pii
from router.classifier.pii_rules import PHONE_NUMBER, find_structured

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "minilm"


@pytest.fixture(scope="module")
def models():  # type: ignore[no-untyped-def]
    if not (MODEL_DIR / "model_int8.onnx").is_file():
        pytest.skip(f"{MODEL_DIR} is missing: run `semantic-router models build` to test the real token head")
    from router.classifier.model import EncoderModels

    return EncoderModels.load(MODEL_DIR)


@pytest.mark.parametrize(("text", "address"), [
    ("Her address is 1842 Maple Ridge Drive, Sacramento, CA 95822.", "1842 Maple Ridge Drive, Sacramento, CA 95822"),
    (("Divorce settlement review for Emily Carter, residing at 1842 Maple Ridge Drive, Sacramento, CA 95822. She "
      "receives $2,500/month alimony under a 2020 agreement."), "1842 Maple Ridge Drive, Sacramento, CA 95822"),
    ("Send the forms to 77 W 3rd St Apt 4B\nAustin, TX 78701-1234 by Friday", "77 W 3rd St Apt 4B\nAustin, TX 78701-1234"),
    ("Mi dirección es 90 Queen Street East, Toronto, ON M5C 1S1, gracias", "90 Queen Street East, Toronto, ON M5C 1S1"),
])
def test_a_complete_postal_address_is_found_whatever_the_head_reads(models, text: str, address: str) -> None:  # type: ignore[no-untyped-def]
    """Trial 19: the head read "1842 Maple Ridge Drive, Sacramento, CA 95822" in pieces too small to be an address
    ("Ridge", "22"), so a prompt holding it reached gpt-oss-120b, whose pii_policy refuses STREET_ADDRESS, and was cached."""
    found = detect_pii(text, models.encoder.encode(text))
    assert (STREET_ADDRESS, address) in [(f.type, text[f.start : f.end]) for f in found]


@pytest.mark.parametrize("text", [
    "We shipped 300 units to Sacramento, CA 95822 last week.",
    "Section 21 Insurance Requirements, Chapter 7, NY 10001",
    "Flight 1842 Maple Leaf Airways lands in Toronto at 9",
    "Use 12 Park Place Properties as the example on page 4.",
])
def test_what_is_not_a_complete_address_is_not_one(text: str) -> None:
    assert full_addresses(text) == []


@pytest.mark.parametrize("text", [
    "as set out in Section 21. Insurance is required",
    "Section 21 Insurance",
    "subject to Article 7 Hereof",
    "except as stated in Clause 12(b) The Tenant",
    "listed in Schedule 3. The Landlord",
    "under § 4.2 Notices",
    "see Chapter 11 Bankruptcy",
])
def test_a_numbered_heading_or_cross_reference_is_no_address_candidate(text: str) -> None:
    """Trial 19: every "Section 21." of a long contract was a place the head had to read, more than its windows hold,
    so a PII-free lease was unscreened and kept off gpt-oss-120b."""
    assert address_candidates(text, 0, len(text)) == []


def _lease(addresses: str = "") -> str:
    clause = ("The Tenant shall comply with the obligations described herein and shall not permit any act that would "
              "increase the cost of coverage or breach applicable law, as set out in Section {ref}. Any amount due "
              "shall bear interest at the rate in Schedule {sched} until paid, subject to Article {ref} hereof. ")
    titles = ("Term", "Rent", "Deposit", "Use", "Repairs", "Alterations", "Utilities", "Taxes", "Insurance", "Indemnity",
              "Assignment", "Default", "Remedies", "Notices", "Surrender", "Casualty", "Access", "Signage", "Parking",
              "Brokers", "Estoppel", "Subordination", "Waiver", "Severability", "Amendments", "Counterparts",
              "Holdover", "Condemnation", "Guaranty", "Miscellaneous")
    parts = [f"\nSection {i}. {title}\n{clause.format(ref=(i * 7) % 30 + 1, sched=i % 4 + 1) * 2}"
             for i, title in enumerate(titles, 1)]
    parts.insert(15, addresses)
    return "COMMERCIAL LEASE\n" + "".join(parts)


def test_a_long_contract_with_cross_references_is_screened_for_addresses(models) -> None:  # type: ignore[no-untyped-def]
    from router.classifier.model import EncoderClassifier

    text = _lease()
    assert len(text) > 15_000
    result = EncoderClassifier(models).classify(text)
    assert STREET_ADDRESS not in result.unscreened
    assert [f for f in result.pii if f.type == STREET_ADDRESS] == []


@pytest.mark.parametrize("address", ["77 Orchard Lane, Fresno, CA 93650", "77 Orchard Lane"])
def test_an_address_in_the_middle_of_a_long_contract_is_still_found(models, address: str) -> None:  # type: ignore[no-untyped-def]
    from router.classifier.model import EncoderClassifier

    text = _lease(f"\nNotices to the Tenant go to {address}, attention of the manager.\n")
    result = EncoderClassifier(models).classify(text)
    assert STREET_ADDRESS not in result.unscreened
    assert any(f.type == STREET_ADDRESS and address.startswith(text[f.start : f.end].strip(" ,")[:8])
               for f in result.pii)


@pytest.mark.parametrize("text", [
    "Hi, this is Tom Becker, order 48213, where is it?",
    "Can I exchange order 48213 for a size 9?",
])
def test_an_order_number_is_no_house_number(models, text: str) -> None:  # type: ignore[no-untyped-def]
    """Trial 18: the head read "order 48213" as a street address."""
    assert STREET_ADDRESS not in {f.type for f in detect_pii(text, models.encoder.encode(text))}


def test_a_street_beside_an_order_number_is_still_an_address(models) -> None:  # type: ignore[no-untyped-def]
    text = "Please ship order 48213 to 48 Maple Street instead, Tom Becker"
    found = {(f.type, text[f.start : f.end]) for f in detect_pii(text, models.encoder.encode(text))}
    assert (STREET_ADDRESS, "48 Maple Street") in found and PERSON in {kind for kind, _ in found}


@pytest.mark.parametrize("text", [
    "My order 100234-88812 has not arrived.",
    "What does the phone number 1-800-829-1040 at the IRS handle?",
    "Is 866-860-4259 the IRS number for identity theft?",
    "Our premium hotline is 1-900-226-4321, call it.",
])
def test_order_numbers_and_business_lines_are_no_phone_numbers(text: str) -> None:
    """A toll-free or premium-rate line is a business's, not a person's; six digits before a dash are no phone group."""
    assert PHONE_NUMBER not in {f.type for f in find_structured(text)}


@pytest.mark.parametrize(("text", "phone"), [
    ("call me at (415) 892-2671 tonight", "(415) 892-2671"),
    ("my cell is 98765 43210", "98765 43210"),
    ("ruf mich an, Telefon 030 12345678", "030 12345678"),  # a UK UAN too, but a Berlin landline
    ("phone: 0911 1234567", "0911 1234567"),  # UK premium-rate, a Nürnberg landline
])
def test_a_personal_line_is_still_a_phone_number(text: str, phone: str) -> None:
    assert (PHONE_NUMBER, phone) in [(f.type, text[f.start : f.end]) for f in find_structured(text)]


@pytest.mark.parametrize(("text", "span", "address"), [
    ("LEASE\nSection 21. HOLDOVER\nThe Tenant shall vacate.", "21. HOLDOVER", False),  # its label before the span
    ("LEASE\nSection 21. HOLDOVER\nThe Tenant shall vacate.", "Section 21. HOLDOVER", False),
    ("where is order 48213, please", "order 48213", False),
    ("Section 8 housing at 12 Elm Street, please", "Section 8 housing at 12 Elm Street", True),
    ("they moved to 21 Holdover Lane last May", "21 Holdover Lane", True),
])
def test_a_head_span_whose_only_number_is_a_section_or_an_order_is_no_address(text: str, span: str,
                                                                            address: bool) -> None:
    """Trials 18 and 19: the head read "order 48213" and a contract's upper-case heading "Section 21. HOLDOVER" as
    street addresses; the word naming the number may stand before the span the head tagged."""
    from tests.unit.test_pii import _head_reads

    assert bool(_head_reads(text, span, 2)) is address
