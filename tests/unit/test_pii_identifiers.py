"""Dates of birth and identifiers named by a cue word (pii_rules._named, _mbis, the ITIN in _ssns): trials 16, 17 and
19 sent MRNs, member IDs, passport numbers, EINs, ITINs and birth dates to gpt-oss-120b and cached them, for no PII
type had them. Each family's positives beside the look-alikes a prompt full of numbers holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.classifier import pii_rules as rules
from router.classifier.canonical import canonical
from router.config import load_config

CONFIG = Path(__file__).resolve().parents[2] / "config" / "config.yaml"


def _found(text: str) -> list[tuple[str, str]]:
    plain = canonical(text)
    return [(f.type, plain[f.start : f.end]) for f in rules.find_structured(plain)]


@pytest.mark.parametrize(
    ("text", "date"),
    [
        ("Summarize this visit note: DOB 12/25/2019, telehealth visit for anxiety.", "12/25/2019"),
        ("Pt: Olivia Chen-Martin, D.O.B. 04-17-2012 - follow up for otitis", "04-17-2012"),
        ("Date of birth: 3 March 1985", "3 March 1985"),
        ("date of birth (MM/DD/YYYY): 07/11/1990", "07/11/1990"),
        ("she was born on March 3rd, 1985 in Leeds", "March 3rd, 1985"),
        ("born in Leeds on 9th of September 2001", "9th of September 2001"),
        ("Birthdate 1984-03-18, allergies none", "1984-03-18"),
        ("my birthday is 18-Mar-1984", "18-Mar-1984"),
        ("dob 31.12.69 per the chart", "31.12.69"),
    ],
)
def test_a_date_after_a_birth_cue_is_a_date_of_birth(text: str, date: str) -> None:
    assert (rules.DATE_OF_BIRTH, date) in _found(text)


@pytest.mark.parametrize(
    "text",
    [
        "The meeting is on 12/25/2019 at noon.",  # a date alone
        "Our store opened on March 3, 1985 in Leeds.",
        "Born to Run was released 8/25/1975.",  # "born" not leading to the date
        "She was born in the 1990s. The clinic opened 04/17/2012.",  # a sentence ends between
        "DOB 02/30/1990",  # no such day
        "DOB 13/13/1990",
        "dob = DateField()  # added 2023",
        "The happy birthday song was written in 1893.",
    ],
)
def test_a_date_without_a_birth_cue_or_no_real_date_is_none(text: str) -> None:
    assert rules.DATE_OF_BIRTH not in {kind for kind, _ in _found(text)}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("DOB 12/25/2019, MRN 9921044 - telehealth visit", "9921044"),
        ("medical record number: 00482913, seen for rash", "00482913"),
        ("Patient ID A7730214. Write the discharge summary.", "A7730214"),
        ("chart # HX44819203 pt reports cough", "HX44819203"),
        ("Member ID: XKP884512093, appeal the denied MRI", "XKP884512093"),
        ("Aetna ID W284719036", "W284719036"),
        ("humana id H61829347", "H61829347"),
        ("my subscriber # is U9928341701", "U9928341701"),
        ("Medicare number 1EG4-TE5-MK73", "1EG4-TE5-MK73"),
        ("Medicaid ID MCD44019283", "MCD44019283"),
        ("policy number 987654321A", "987654321A"),
        ("student ID S20231847, section 3", "S20231847"),
        ("Employee number: EMP00912", "EMP00912"),
        ("passport no. C03005988, nationality Canadian", "C03005988"),
        ("driver's license D123-4567-8901", "D123-4567-8901"),
        ("EIN 12-3456789 for the W-9", "12-3456789"),
        ("Employer Identification Number: 98-7654321", "98-7654321"),
        ("ITIN 944-81-2277", "944-81-2277"),
        ("routing number 021000021, account number 000123456789", "000123456789"),
        ("bank account number 4432 8871 2290", "4432 8871 2290"),
    ],
)
def test_an_identifier_named_by_its_cue_word_is_an_id_number(text: str, value: str) -> None:
    assert (rules.ID_NUMBER, value) in _found(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("the card says 1EG4TE5MK73", "1EG4TE5MK73"),  # the MBI's own format: 11 characters, letters and digits placed
        ("card: 1EG4-TE5-MK73", "1EG4-TE5-MK73"),
        ("for the return: 912-78-1234, filing single", "912-78-1234"),  # an ITIN's own layout and ranges
    ],
)
def test_identifiers_with_a_format_of_their_own_need_no_cue(text: str, value: str) -> None:
    assert _found(text) == [(rules.ID_NUMBER, value)]


def test_a_bank_account_is_an_id_number_and_its_routing_number_no_phone() -> None:
    """Trial 19: "checking account 4839201746" was not found, and "routing number 021000021" (a bank's number, its
    3-7-1 checksum valid) was a PHONE_NUMBER, "number" being a phone word."""
    assert _found("Please pay from checking account 4839201746.") == [(rules.ID_NUMBER, "4839201746")]
    assert _found("Wire it to routing number 021000021, account number 4839201746.") == [
        (rules.ID_NUMBER, "4839201746")]
    assert _found("My routing number is 021000021.") == []
    assert _found("routing number 021000022, call me") == [(rules.PHONE_NUMBER, "021000022")]  # no valid checksum


def test_an_itin_is_never_also_an_ssn() -> None:
    assert _found("ITIN: 912-78-1234, SSN 536-22-1234") == [
        (rules.ID_NUMBER, "912-78-1234"), (rules.US_SSN, "536-22-1234")]


@pytest.mark.parametrize(
    "text",
    [
        "My order number 12345678 hasn't arrived.",
        "Invoice id INV-2023-00491 is overdue.",
        "Upgrade from version 1.2.3 to 2.0.1 breaks the build.",
        "Case number 2023-CV-01234 was dismissed, explain why.",
        "Tracking number 1Z999AA10123456784 shows a delay.",
        "SELECT * FROM patients WHERE patient_id = 10234;",  # a code identifier, not a cue
        "Add a student ID field to the form (8 digits).",
        "What does EIN stand for and how do I get one?",
        "Account balance is 12345.67 dollars; account number 55501 at the gym",  # no routing number: not a bank's
        "commit 1EG4TE5 fixed the tests, build 20231201",
        "912-40-1234 is no ITIN",  # middle group outside the ITIN ranges
        "Charge code 55-1234567 in the ledger",  # an EIN's layout without its cue
        "Policy gradient methods: PPO ran 4096 steps.",
        "passport photos cost $15 at 2 locations",
    ],
)
def test_look_alikes_are_no_identifiers(text: str) -> None:
    assert {kind for kind, _ in _found(text)} & {rules.ID_NUMBER, rules.DATE_OF_BIRTH} == set()


def test_the_shipped_config_keeps_birth_dates_and_identifiers_from_gpt_oss() -> None:
    """gpt-oss-120b allows EMAIL_ADDRESS and PERSON only; the new types are refused by default, not by a list."""
    models = load_config(CONFIG).models
    for kind in (rules.DATE_OF_BIRTH, rules.ID_NUMBER):
        assert not models["gpt-oss-120b"].pii_policy.allows(frozenset({kind}))
        assert models["qwen3-4b"].pii_policy.allows(frozenset({kind}))
