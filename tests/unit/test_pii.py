"""PII: checksum validators, exact spans of structured findings, span decoding, and the real token head."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from router.classifier import pii
from router.classifier import pii_rules as rules
from router.classifier.pii import PII_TYPES, TokenHead, detect_pii, token_features
from router.classifier.pii_cues import find_cues
from router.classifier.pii_language import is_english

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "minilm"


@pytest.mark.parametrize(
    ("digits", "valid"),
    [
        ("4111111111111111", True),
        ("4111111111111112", False),
        ("378282246310005", True),
        ("378282246310006", False),
    ],
)
def test_luhn(digits: str, valid: bool) -> None:
    assert rules.luhn_valid(digits) is valid


@pytest.mark.parametrize(
    ("iban", "valid"),
    [
        ("GB82WEST12345698765432", True),
        ("GB82WEST12345698765433", False),  # checksum broken by the last digit
        ("DE89370400440532013000", True),
        ("DE8937040044053201300", False),  # one character short for DE
        ("XX89370400440532013000", False),  # unknown country
    ],
)
def test_iban(iban: str, valid: bool) -> None:
    assert rules.iban_valid(iban) is valid


@pytest.mark.parametrize(
    ("ssn", "valid"),
    [("536-90-4399", True), ("000-12-3456", False), ("666-12-3456", False), ("912-12-3456", False),
     ("536-00-4399", False), ("536-90-0000", False), ("078-05-1120", False)],
)  # fmt: skip
def test_ssn_rules(ssn: str, valid: bool) -> None:
    assert rules.ssn_valid(*ssn.split("-")) is valid


def _found(text: str) -> list[tuple[str, str]]:
    return [(f.type, text[f.start : f.end]) for f in rules.find_structured(text)]


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("4111 1111 1111 1111", rules.CREDIT_CARD),
        ("4111-1111-1111-1111", rules.CREDIT_CARD),
        ("GB82 WEST 1234 5698 7654 32", rules.IBAN_CODE),
        ("536-90-4399", rules.US_SSN),
        ("jane.oneil+billing@mail.example.co.uk", rules.EMAIL_ADDRESS),
        ("(415) 682-2671", rules.PHONE_NUMBER),
        ("+41 44 668 18 00", rules.PHONE_NUMBER),
        ("81.2.69.160", rules.IP_ADDRESS),
        ("2606:4700:4700::1111", rules.IP_ADDRESS),
        ("2a00:1450:4001:82b::200e", rules.IP_ADDRESS),
    ],
)
def test_structured_span_is_exact(value: str, kind: str) -> None:
    text = f"Hi, please use {value}. Thanks!"
    assert _found(text) == [(kind, value)]


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 was declined",  # Luhn fails
        "ticket 666-12-3456 is closed",  # SSA never issues area 666
        "the meeting is on 2024-05-17 at 10:30",  # a date, not a phone
        "pi is about 3.1415926535",  # a decimal, not a phone
        "version 999.1.1.1 of the ruleset",  # not an IPv4 address
        "order number 536904399 shipped",  # bare nine digits without an SSN keyword
        "what is 12 * 7? and 1234567 / 3?",
        "print(arr[1::2]) and a[b::c]",  # slices parse as IPv6 but are code
        "see section 3.1.2.4 of the spec",  # a section number, not an IPv4 address
        "Rua Almeida, 86, 4736-819 Lamego",  # a Portuguese postcode is 7 digits, like a US local number
    ],
)
def test_invalid_or_look_alike_numbers_are_not_reported(text: str) -> None:
    assert _found(text) == []


@pytest.mark.parametrize(
    "text",
    [
        "Calculate area of histogram frequency 2 2 17 27 22 1 2",  # single-digit groups: a run of counts
        "a-frame: `data: 0.3 0.5 0.7 0.6`",
        "x y z\n-0.568 12.997 9.450\n-0.568 13.066 13.740\n-0.567 13.135 14.290",  # cells of a number table
        "Weekly_Sales: num 24924 46039 41596 19404 21828 ...",
        "(Session info: chrome=109.0.5414.87)",  # a version
        "ssh to the server at 111.11.1111.1111 port 22",  # a made-up IP address
        '"CAS ID": "2060571-02-8"',  # a CAS registry number
        "see DFARS 252.204-7021 on cybersecurity",  # a regulation clause: dots and dashes mixed
        "'2023-03-06 10:39:34.685784-05'",
        "movie 4 83 2007 Thriller 174 2007-07-20 Eric Forsberg",  # a table row holding an ISO date
        "The CTCP is currently located at 11S NU 48000 13000.",  # a military grid reference
        '{"object":"text_completion","created":1673222706}',  # a Unix time, digits alone and no valid number
        "Traceback (most recent call last) /tmp/ipykernel_27/4149060727.py in 25",  # a file name
        "raport all 10 1900 19000 al qombinations",  # spaced digits, not a valid number
        "john.doe@email.com | 555-555-5555 | linkedin.com/in/johndoe",  # NANP placeholders
        "Call me on +1 202 555 0143.",
        "call (415) 555-2671 tomorrow",
        "net.ipv4.ip_local_port_range = 32768-65535\n",  # a range: one length, the first smaller
        "| threshold | recall |\n| 0.550 (133 of 242) | 0.61 |\n",  # a fraction and its count
        "Is 078-05-1120 a real SSN? It was printed on wallet inserts.",  # an SSN's layout the SSN rules refuse
    ],
)
def test_numbers_that_are_no_phone_numbers(text: str) -> None:
    """Tables, versions, clauses and placeholders moved code and maths off PII-restricted models (TRAIN turns)."""
    assert rules.PHONE_NUMBER not in {kind for kind, _ in _found(text)}


@pytest.mark.parametrize(
    ("text", "phone"),
    [
        ("please call me at (415) 682-2671 tomorrow", "(415) 682-2671"),
        ("Contact us today on Tel: (07) 3265 3888", "(07) 3265 3888"),
        ("contact me @610 906 5208 or email", "610 906 5208"),
        ("France: +33 1 77 70 00 59", "+33 1 77 70 00 59"),
        ("Australia T: +61 (0)2 9746-5896", "+61 (0)2 9746-5896"),
        ("mon portable : 06 12 34 56 78", "06 12 34 56 78"),
        ("1 415 682 2671 my cell", "1 415 682 2671"),
        ("my phone number is 4156822671", "4156822671"),
        ("reach me at 415.682.2671", "415.682.2671"),
        ("reach me at 1.415.682.2671", "1.415.682.2671"),
        ("Springfield IL 62704, 217-682-0199", "217-682-0199"),
        ("call 32768-65535 tonight", "32768-65535"),  # a range's shape, but a phone word says it is one
        ("mijn nummer: 0612-345678", "0612-345678"),
        ("row 12 +44 20 7946 0958", "+44 20 7946 0958"),
        ("Ping me on 98765 43210 tomorrow", "98765 43210"),  # an Indian mobile, written without its trunk 0
        ("mon portable : 06.12.34.56.78", "06.12.34.56.78"),  # not a date: it goes on
        ("GSM 0475.12.34.56", "0475.12.34.56"),  # four dotted groups after a trunk 0: no IP address or version
        ("Tel. 044.668.18.00", "044.668.18.00"),
    ],
)
def test_phone_numbers_written_as_people_write_them_are_found(text: str, phone: str) -> None:
    assert _found(text) == [(rules.PHONE_NUMBER, phone)]


@pytest.mark.parametrize(
    "text",
    [
        "Flask listens on 127.0.0.1 only",
        "DB_HOST=10.0.12.7\nDB_PORT=5432",
        "regex to match an IPv4 address like 192.168.1.1",
        "transport_address: 10.15.192.115:9300",  # private, and no phone number either
        "docs use 192.0.2.10 and 2001:db8::8a2e:370:7334",  # documentation ranges
        "the link-local fe80::1 and ::1",
        "bind to 0.0.0.0 or 100.64.0.1, multicast 224.0.0.251",
        "The current ruby version is 2.6.8.205.",  # a version, in a version context
        "grpc-stubs==1.53.0.6\nhttpx==0.28.1\n",  # a version pin (pip freeze)
        "/lib/python3.11/site-packages/grpc_stubs-1.53.0.6.dist-info/METADATA",  # a package's file name (trial 12)
        "pip download foo-51.2.0.6.tar.gz and bar-13.250.2.19-py3-none-any.whl",
        'assert url.host == "::ffff:192.168.0.1"',  # IPv4-mapped: judged as the private IPv4 address it maps
        "requires foo>=51.2.0.6, bar~=13.250.2.19",
        "Upgrade to release 4.2.1.0 first",
        # `pip list` as a tool result (trial 12): a four-part version in the Version column, and in pip list --outdated
        ("Package                Version\n---------------------- ---------\ngrpc-stubs             1.53.0.6\n"
         "grpcio                 1.76.0\n"),
        ("Package        Version  Latest   Type\n-------------- -------- -------- -----\n"
         "grpc-stubs     1.53.0.5 1.53.0.6 wheel\npywin32-ctypes 0.2.2    0.2.3    wheel\n"),
    ],
)
def test_addresses_that_name_no_one_are_no_ip_addresses(text: str) -> None:
    assert _found(text) == []


@pytest.mark.parametrize(
    ("text", "ip"),
    [
        ("the ip_addresses array is returning ['1.2.3.4', '13.250.2.198']", "13.250.2.198"),
        ("fetch('http://159.89.98.186:5000/root')", "159.89.98.186"),
        ("my home IP is 81.2.69.160, version 2 of the firewall rules blocks it", "81.2.69.160"),
        ("the client came from ::ffff:81.2.69.160 again", "81.2.69.160"),  # mapped: the IPv4 address counts
        ("the build box at 81.2.69.160 is down", "81.2.69.160"),  # a version's word, but not the number's
        ("Before the release, ssh into 81.2.69.160", "81.2.69.160"),
        ("scp the dump to 81.2.69.160.", "81.2.69.160"),  # a sentence's full stop is no file name
        # a column of addresses is no column of versions (kubectl get svc)
        (("NAME     TYPE           CLUSTER-IP     EXTERNAL-IP     PORT(S)\n"
          "router   ClusterIP      10.0.148.212   <none>          50051/TCP\n"
          "envoy    LoadBalancer   10.0.27.191    81.2.69.160     8801:31284/TCP\n"), "81.2.69.160"),
        ("Python 3.11.4 and pip 24.2 are installed\nthen ssh into 81.2.69.160 to deploy\n", "81.2.69.160"),
    ],
)
def test_public_addresses_are_ip_addresses(text: str, ip: str) -> None:
    assert _found(text) == [(rules.IP_ADDRESS, ip)]


@pytest.mark.parametrize(
    ("text", "card"),
    [
        ("card 4111111111111111 please", "4111111111111111"),
        ("card 4111 1111 1111 1111 please", "4111 1111 1111 1111"),
        ("amex 3782 822463 10005 please", "3782 822463 10005"),
        ("diners 3056 930902 5904 please", "3056 930902 5904"),
    ],
)
def test_cards_printed_unbroken_or_in_their_groups_are_cards(text: str, card: str) -> None:
    assert _found(text) == [(rules.CREDIT_CARD, card)]


def test_a_table_row_passing_luhn_is_no_card() -> None:
    """13 digits of a row ("27995 2020-08-20") passed Luhn and an IIN prefix: a phantom card in a movie table."""
    assert rules.CREDIT_CARD not in {k for k, _ in _found("Drama, Horror, Mystery, Thriller 27995 2020-08-20 Gerard")}


def test_iban_with_broken_checksum_is_not_an_iban() -> None:
    assert rules.IBAN_CODE not in {kind for kind, _ in _found("transfer from GB82 WEST 1234 5698 7654 33")}


def test_bare_ssn_needs_a_keyword_nearby() -> None:
    assert _found("my ssn is 536904399") == [(rules.US_SSN, "536904399")]


@pytest.mark.parametrize("text", ["SSN 536.22.1234", "social security number: 536.22.1234",
                                  "536.22.1234 (my SSN)"])
def test_a_dotted_ssn_is_an_ssn_where_the_text_says_so(text: str) -> None:
    assert _found(text) == [(rules.US_SSN, "536.22.1234")]


@pytest.mark.parametrize("text", ["upgraded to 536.22.1234 last night", "build 412.30.5518 fails",
                                  "the total was 536.22.1234 units", "536.22.1234"])
def test_a_bare_dotted_number_is_no_ssn(text: str) -> None:
    """Versions, builds and figures with 3.2.4 digits were phantom SSNs: cached never, kept from gpt-oss-120b."""
    assert _found(text) == []


def test_iban_stops_at_registered_length() -> None:
    text = "IBAN GB82 WEST 1234 5698 7654 32 ABCD please"
    assert _found(text) == [(rules.IBAN_CODE, "GB82 WEST 1234 5698 7654 32")]


def _one_hot_head() -> TokenHead:
    """A head whose label is the index of the hot state dimension: tests decoding, not learning."""
    n_in, labels = 3 * 384 + 4, ("O", "PERSON", "STREET_ADDRESS", "LOCATION", "ORGANIZATION")
    w1 = np.zeros((n_in, len(labels)), np.float32)
    w1[: len(labels), :] = np.eye(len(labels), dtype=np.float32) * 20
    return TokenHead(
        w1=w1, b1=np.zeros(len(labels), np.float32), w2=np.eye(len(labels), dtype=np.float32),
        b2=np.zeros(len(labels), np.float32), labels=labels,
        emit=frozenset(labels[1:4]), min_score=0.8,
    )  # fmt: skip


def _tokens(text: str, pieces: list[tuple[str, int]]) -> SimpleNamespace:
    """Encoded-like object: each (piece, label index) becomes one token at the piece's offset."""
    offsets, states, pos = [], [], 0
    for piece, label in pieces:
        start = text.index(piece, pos)
        offsets.append((start, start + len(piece)))
        state = np.zeros(384, np.float32)
        state[label] = 1.0
        states.append(state)
        pos = start + len(piece)
    return SimpleNamespace(token_states=np.array(states), offsets=np.array(offsets))


def test_head_spans_group_runs_extend_words_and_drop_unemitted() -> None:
    text = "Ask Margaret Thompson at Acme Corp about Z"
    pieces = [
        ("Ask", 0),
        ("Marg", 1),
        ("Thompson", 1),
        ("at", 0),
        ("Acme", 4),
        ("Corp", 4),
        ("about", 0),
        ("Z", 1),
    ]
    found = _one_hot_head().spans(text, _tokens(text, pieces))
    # "Marg" grows to the whole word; ORGANIZATION is not emitted; a lone letter is not a name.
    assert [(f.type, text[f.start : f.end]) for f in found] == [("PERSON", "Margaret Thompson")]


@pytest.mark.parametrize(
    ("text", "pieces", "expected"),
    [
        # CamelCase identifiers with two inner capitals are code; one inner capital is still a name.
        ("raise NotImplementedError now", [("raise", 0), ("NotImplementedError", 1), ("now", 0)], []),
        ("ask McGregor now", [("ask", 0), ("McGregor", 1), ("now", 0)], [("PERSON", "McGregor")]),
        # An accented capital is a capital.
        ("ask Jörg now", [("ask", 0), ("Jörg", 1), ("now", 0)], [("PERSON", "Jörg")]),
        # Letters fused with digits, or a path without a capital, are not street addresses.
        ("use ERC1155 tokens", [("use", 0), ("ERC1155", 2), ("tokens", 0)], []),
        ("cd m3760/hisq then", [("cd", 0), ("m3760/hisq", 2), ("then", 0)], []),
        ("visit 12 main st soon", [("visit", 0), ("12", 2), ("main", 2), ("st", 2), ("soon", 0)],
         [("STREET_ADDRESS", "12 main st")]),
        # A lowercase name needs a confident head (the one-hot head's score is about 0.99).
        ("tell anna hi", [("tell", 0), ("anna", 1), ("hi", 0)], [("PERSON", "anna")]),
    ],
)  # fmt: skip
def test_head_spans_shape_checks(text: str, pieces: list[tuple[str, int]], expected: list[tuple[str, str]]) -> None:
    found = _one_hot_head().spans(text, _tokens(text, pieces))
    assert [(f.type, text[f.start : f.end]) for f in found] == expected


@pytest.mark.parametrize(("first", "last"), [("Daniel", "Thompson"), ("Émile", "Duval")])
def test_capitalised_full_name_is_found_at_a_looser_p_o_single_word_is_not(first: str, last: str) -> None:
    text = f"add {first} {last} and Palantir"
    pieces = [("add", 0), (first, 1), (last, 1), ("and", 0), ("Palantir", 1)]
    tokens = _tokens(text, pieces)
    tokens.token_states[[1, 2, 4], 0] = 0.95  # P(O) about 0.27: above 1 - min_score, below FULL_NAME_MAX_O
    found = _one_hot_head().spans(text, tokens)
    assert [(f.type, text[f.start : f.end]) for f in found] == [("PERSON", f"{first} {last}")]


def test_subnormal_first_layer_weights_are_flushed_to_zero() -> None:
    w1 = np.full((2, 3), 1e-39, np.float32)
    w1[0, 0] = 0.5
    arrays = {
        "mean": np.zeros(2, np.float32), "scale": np.ones(2, np.float32), "w1": w1, "b1": np.zeros(3, np.float32),
        "w2": np.zeros((3, 2), np.float32), "b2": np.zeros(2, np.float32), "labels": np.array(["O", "PERSON"]),
        "emit": np.array(["PERSON"]), "min_score": np.float32(0.9),
    }  # fmt: skip
    head = TokenHead.from_arrays(arrays)
    assert head.w1[0, 0] == 0.5 and np.count_nonzero(head.w1) == 1


def test_structured_finding_wins_over_overlapping_head_span() -> None:
    text = "mail anna.smith@example.org now"
    pieces = [("mail", 0), ("anna", 1), ("smith", 1), ("example", 0), ("org", 0), ("now", 0)]
    found = detect_pii(text, _tokens(text, pieces), _one_hot_head())
    assert [(f.type, text[f.start : f.end]) for f in found] == [
        (rules.EMAIL_ADDRESS, "anna.smith@example.org")
    ]


def test_token_features_hold_neighbours_and_shape() -> None:
    text = "Bill paid IBM for McDonald2"
    pieces = [("Bill", 1), ("paid", 0), ("IBM", 2), ("for", 0), ("Mc", 0), ("Donald2", 0)]
    feats = token_features(text, _tokens(text, pieces))
    assert feats.shape == (6, 3 * 384 + 4)
    assert feats[1, 384 + 1] == 1.0 and feats[1, 768 + 2] == 1.0  # "paid" sees "Bill" before, "IBM" after
    assert not feats[0, 384:768].any() and not feats[-1, 768:1152].any()  # zero padding at the edges
    # capital, all caps, continues a word, has a digit
    assert feats[:, -4:].tolist() == [
        [1, 0, 0, 0],
        [0, 0, 0, 0],
        [1, 1, 0, 0],
        [0, 0, 0, 0],
        [1, 0, 0, 0],
        [1, 0, 1, 1],
    ]


@pytest.fixture(scope="module")
def encoder():  # type: ignore[no-untyped-def]
    if not (MODEL_DIR / "model_int8.onnx").is_file():
        pytest.skip(f"{MODEL_DIR} is missing: run `semantic-router models build` to test the real token head")
    from router.classifier.encoder import Encoder

    return Encoder(MODEL_DIR)


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("Could you draft a reply to Margaret Thompson about the delayed invoice?", "PERSON", "Margaret Thompson"),
        ("Please forward the parcel to 742 Evergreen Terrace, Springfield, OR 97403 by Friday.",
         "STREET_ADDRESS", "742 Evergreen Terrace"),
    ],
)  # fmt: skip
def test_real_head_finds_name_and_address_in_fresh_sentence(
    encoder, text: str, kind: str, value: str
) -> None:  # type: ignore[no-untyped-def]
    found = detect_pii(text, encoder.encode(text))
    start = text.index(value)
    assert any(f.type == kind and f.start <= start < f.end for f in found), found


@pytest.mark.parametrize(
    "text",
    [
        ("Why is the ring so thin?\n let accretionDiskGeometry = SCNTorus(ringRadius: 2.5, pipeRadius: 0.2)\n"
         " let accretionDiskMaterial = SCNMaterial()"),  # was STREET_ADDRESS "5, pipeRadius"
        ("Why does this print NaN?\n\n$points = [\n new Coordinate(19.820664, -155.468066), // Mauna Kea Summit\n"
         " new Coordinate(20.709722, -156.253333), // Haleakala Summit\n new Coordinate(21.306944, -157.858333), "
         "// Diamond Head\n];\n$calculator = new Vincenty();"),  # was STREET_ADDRESS "Mauna Kea Summit"
    ],
)
def test_real_head_reads_no_street_address_in_code(encoder, text: str) -> None:  # type: ignore[no-untyped-def]
    """Code moved coding questions off gpt-oss-120b (which refuses STREET_ADDRESS) on TRAIN prompts."""
    assert [f for f in detect_pii(text, encoder.encode(text)) if f.type == "STREET_ADDRESS"] == []


@pytest.mark.parametrize(
    "text",
    [
        'customer = {"name": "Ana", "address": "742 Evergreen Terrace, Springfield"}',
        "See https://maps.example.com/place for 742 Evergreen Terrace, Springfield",
        "ADR;type=HOME:;;6445 S Minerva Ave;Chicago;IL;60637",
        '{"name": "Ana Lopez", "address": "742 Evergreen Terrace\\nSpringfield, OR 97403"}',  # an escaped line break
        "Please ship it to 742 Evergreen Terrace/Apt 5, Springfield, OR 97403.",
    ],
)
def test_real_head_still_finds_a_street_address_in_data_and_beside_a_url(  # type: ignore[no-untyped-def]
    encoder, text: str
) -> None:
    assert any(f.type == "STREET_ADDRESS" for f in detect_pii(text, encoder.encode(text)))


@pytest.mark.parametrize(
    ("text", "span", "code"),
    [
        ("C:\\Users\\Mike\\OneDrive - Church of Jesus Christ\\Documents", "Jesus Christ", True),
        ("cd /srv/Harbor View/logs", "Harbor View", True),
        ("new Coordinate(19.82, -155.47), // Mauna Kea Summit", "Mauna Kea Summit", True),
        ("SCNTorus(ringRadius: 2.5, pipeRadius: 0.2)", "5, pipeRadius", True),
        ("Send it to 742 Evergreen Terrace, Springfield", "742 Evergreen Terrace", False),
        ("https://example.com/x and 742 Evergreen Terrace", "742 Evergreen Terrace", False),
        ("Harbor View / Springfield", "Harbor View", False),
        ("billing address 39/150, Bal Nagar, Eluru", "150, Bal Nagar", False),  # a house number, not a path
        ("Ship it to 12 Main Street // not the old office", "12 Main Street", False),
        ('"to": "742 Evergreen Terrace\\r\\nSpringfield"', "742 Evergreen Terrace", False),  # escapes, not a path
        ("C:\\Users\\Ana\\Harbor View\\new", "Harbor View", True),
        ("ship it to 742 Evergreen Terrace/Apt 5, Springfield", "742 Evergreen Terrace", False),  # its unit
    ],
)
def test_address_spans_in_code_are_told_from_prose(text: str, span: str, code: bool) -> None:
    start = text.index(span)
    assert pii._in_code(text, start, start + len(span)) is code


def test_every_type_a_finding_can_carry_is_one_the_config_accepts() -> None:
    """`pii_types_allowed` is checked against PII_TYPES: a type the shipped head emits but the list lacked would make
    a valid allow list impossible to write."""
    assert TokenHead.load().emit | set(rules.STRUCTURED_TYPES) == set(PII_TYPES)


def test_real_head_is_quiet_on_a_plain_question(encoder) -> None:  # type: ignore[no-untyped-def]
    text = "What is the time complexity of merge sort and why?"
    assert detect_pii(text, encoder.encode(text)) == ()


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Date: 2024-05-01\nName: Clara Nogueira\nPhone: 555", "Clara Nogueira"),
        ("Directed by:    Linn van den Broek", "Linn van den Broek"),
        ("Hi, my name is anna and I need help", "anna"),
        ("I'm Dave! How are you?", "Dave"),
        ("Hi I'm Dave, can you help?", "Dave"),  # the greeting does not take "I'm" into the name
        ("Dear Margaret,\nthe invoice is attached.", "Margaret"),
        ("Hey there Harrison you sound like a detective", "Harrison"),
        ("Hello Brooke, are you there?", "Brooke"),
        ("Mrs. Thompson called about the leak", "Thompson"),
        ("As promised, here's Robert Smith's address:", "Robert Smith"),
        ("what is elizabeth's phone number?", "elizabeth"),
        ("Please contact Anna Berg about the lease", "Anna Berg"),
        ("See you soon.\nBest regards,\nMaria Lopez", "Maria Lopez"),
    ],
)
def test_each_cue_proposes_the_name_it_precedes_or_follows(text: str, name: str) -> None:
    proposed = [" ".join(text[a:b] for a, b in sorted(cue.words)) for cue in find_cues(text)]
    assert proposed == [name]


@pytest.mark.parametrize(
    "text",
    [
        "Dear Sir, I am writing to complain",
        "Name: TBD\nRole: backend",
        "Hi there, how do I reverse a list?",
        "Hi Assistant, write me a sort",
        "Hey Google, set a timer",
        "Hi, I need help",  # a single capital letter is the pronoun
        "hey i'm tired",  # a lowercase word after a greeting or "I'm" is not proposed
        "  name: web-server\n  image: nginx",  # a lowercase label is a YAML key
        "Customer: Spokane WA",  # role labels head transcripts, not names
    ],
)
def test_cue_like_non_names_propose_nothing(text: str) -> None:
    assert find_cues(text) == []


def _cued(text: str, pieces: list[tuple[str, int]], doubt: tuple[int, ...] = (), cues: bool = True) -> list[tuple[str, str]]:
    """One-hot head findings; tokens in `doubt` get P(O) about 0.27: an entity, but below the head's own bar."""
    tokens = _tokens(text, pieces)
    tokens.token_states[list(doubt), 0] = 0.95
    head = _one_hot_head() if cues else replace(_one_hot_head(), cue_max_o=0.0)
    return [(f.type, text[f.start : f.end]) for f in head.spans(text, tokens)]


def test_a_cue_types_a_name_the_head_reads_as_a_street() -> None:
    text = "Name: Clara Nogueira\nCity: Porto"
    pieces = [("Name", 0), (":", 0), ("Clara", 2), ("Nogueira", 2), ("City", 0), (":", 0), ("Porto", 3)]
    assert _cued(text, pieces, cues=False) == [("STREET_ADDRESS", "Clara Nogueira"), ("LOCATION", "Porto")]
    assert _cued(text, pieces) == [("PERSON", "Clara Nogueira"), ("LOCATION", "Porto")]


def test_a_cue_finds_a_name_below_the_heads_own_bar() -> None:
    text = "Hi Kyle! See you"
    pieces = [("Hi", 0), ("Kyle", 1), ("!", 0), ("See", 0), ("you", 0)]
    assert _cued(text, pieces, doubt=(1,), cues=False) == []
    assert _cued(text, pieces, doubt=(1,)) == [("PERSON", "Kyle")]


def test_a_cue_never_names_a_word_the_head_calls_o() -> None:
    text = "Hi Tired! Dear Sir,"
    pieces = [("Hi", 0), ("Tired", 0), ("!", 0), ("Dear", 0), ("Sir", 1), (",", 0)]  # "Sir" is never proposed
    assert _cued(text, pieces) == [("PERSON", "Sir")] and _cued(text, pieces, doubt=(4,)) == []


def test_an_explicit_cue_vouches_for_a_lowercase_name_a_greeting_does_not() -> None:
    for text, cued in (("my name is anna ok", True), ("hey anna ok", False), ("tell anna ok", False)):
        pieces = [(w, 1 if w == "anna" else 0) for w in text.split()]
        assert _cued(text, pieces, doubt=(len(text.split()) - 2,)) == ([("PERSON", "anna")] if cued else [])


def test_a_possessive_cue_takes_the_name_out_of_the_address_span() -> None:
    text = "here's Robert's address: 12 Main St"
    pieces = [("here's", 0), ("Robert", 2), ("'s", 2), ("address", 0), (":", 0), ("12", 2), ("Main", 2), ("St", 2)]
    assert _cued(text, pieces) == [("PERSON", "Robert"), ("STREET_ADDRESS", "12 Main St")]


def test_real_head_finds_a_lowercase_name_after_an_explicit_cue(encoder) -> None:  # type: ignore[no-untyped-def]
    text = "my name is joanne howard"
    found = detect_pii(text, encoder.encode(text))
    assert [(f.type, text[f.start : f.end]) for f in found] == [("PERSON", "joanne howard")]


@pytest.mark.parametrize(
    "text",
    [
        "Dear Sir, I am writing to complain about the delay.",
        "Hi there, how do I reverse a list in Python?",
        "Name: TBD\nRole: backend",
        "Hey Google, set a timer for ten minutes",
        "Hello World program in Rust",
        "How do I install Docker on Ubuntu?",
        "Find me cheap flights to Paris in May.",
        "What did Elon Musk say about Tesla this year?",
    ],
)
def test_real_head_with_cues_is_quiet_on_cue_like_words_public_figures_products_and_places(
    encoder, text: str
) -> None:  # type: ignore[no-untyped-def]
    assert detect_pii(text, encoder.encode(text)) == ()


@pytest.mark.parametrize(
    "text",
    [
        "Wie viel Trinkgeld gibt man in Deutschland im Restaurant?",  # was PERSON ("Wie viel")
        "Kannst du mir ein Rezept für Apfelkuchen geben?",  # was STREET_ADDRESS ("Apfelkuchen geben")
        "Wo finde ich meine Steuer-ID?",  # was PERSON ("Steuer")
        "Jak mogę poprawić swoje CV?",  # was PERSON ("Jak mogę")
    ],
)
def test_real_head_is_quiet_on_ordinary_non_english_questions(encoder, text: str) -> None:  # type: ignore[no-untyped-def]
    assert detect_pii(text, encoder.encode(text)) == ()


def test_email_and_phone_in_german_text_are_still_found(encoder) -> None:  # type: ignore[no-untyped-def]
    text = "Bitte schreib mir an jonas.becker@example.de oder ruf mich an unter +49 30 12345678, danke!"
    found = {(f.type, text[f.start : f.end]) for f in detect_pii(text, encoder.encode(text))}
    assert found == {("EMAIL_ADDRESS", "jonas.becker@example.de"), ("PHONE_NUMBER", "+49 30 12345678")}


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("我的手机号是13812345678，请快递到了给我打电话。", "PHONE_NUMBER", "13812345678"),  # a Chinese mobile, no spaces
        ("这是我的电话+86 138 1234 5678，谢谢", "PHONE_NUMBER", "+86 138 1234 5678"),
        ("私の電話番号は090-1234-5678です。", "PHONE_NUMBER", "090-1234-5678"),
        ("제 전화번호는 010-1234-5678입니다.", "PHONE_NUMBER", "010-1234-5678"),  # Korean's particle on the number
        ("请把报告发到我的邮箱zhangwei@qq.com谢谢。", "EMAIL_ADDRESS", "zhangwei@qq.com"),
        ("私のメールはtanaka@example.co.jpです", "EMAIL_ADDRESS", "tanaka@example.co.jp"),
        ("kim.minsu@naver.com으로 보내 주세요", "EMAIL_ADDRESS", "kim.minsu@naver.com"),
        ("我的IBAN是DE89370400440532013000，谢谢", "IBAN_CODE", "DE89370400440532013000"),
        ("卡号4111111111111111已经丢了", "CREDIT_CARD", "4111111111111111"),
        ("Мой телефон 8 (912) 345-67-89, перезвоните мне.", "PHONE_NUMBER", "8 (912) 345-67-89"),  # trunk 8
        ("رقم هاتفي هو 0501234567 اتصل بي عند الوصول.", "PHONE_NUMBER", "0501234567"),  # a Saudi mobile, bare
        ("Mi móvil es 612 34 56 78, llámame cuando llegues.", "PHONE_NUMBER", "612 34 56 78"),
        ("Meu celular é (11) 91234-5678, me liga.", "PHONE_NUMBER", "(11) 91234-5678"),
    ],
)
def test_phones_and_emails_are_found_as_people_write_them_in_their_language(text: str, kind: str, value: str) -> None:
    """Trial 15: Chinese and Japanese write no space around a number or an address, Korean attaches its particles,
    and the phone words and national formats were English and Western only: 11 of 18 local phone numbers and 1 of
    3 e-mails were missed (the same values with spaces around them were found)."""
    assert _found(text) == [(kind, value)]


def test_a_fullwidth_email_in_chinese_text_is_found_in_the_form_the_classifier_reads() -> None:
    from router.classifier.canonical import canonical

    text = canonical("请把报告发到我的邮箱ｚｈａｎｇｗｅｉ＠ｑｑ．ｃｏｍ，谢谢。")
    assert _found(text) == [("EMAIL_ADDRESS", "zhangwei@qq.com")]


@pytest.mark.parametrize(
    "text",
    [
        "第13812345678号文件已经归档。",  # bare digits beside Chinese text: no phone word, no phone
        "订单2023-12-31已发货，价格是138元。",
        "バージョン1.2.3.4をインストールしました",
        "user_13812345678 logged in",  # a word's digits are no number of their own
        "see ticket ABC13812345678 for details",
    ],
)
def test_numbers_beside_chinese_text_or_inside_words_are_still_no_pii(text: str) -> None:
    assert _found(text) == []


@pytest.mark.parametrize(
    "text",
    [
        "Was ist die Hauptstadt von Frankreich?",  # was STREET_ADDRESS "ist die Hauptstadt von Frankreich?"
        "Wo liegt die Hauptstadt von Brasilien?",
        "Was ist die beste Pizzeria in der Altstadt?",  # was STREET_ADDRESS "der Altstadt?"
        "Wie viele Einwohner hat die Hauptstadt von Kanada? Rechne den Anteil aus.",
    ],
)
def test_a_german_stadt_word_is_no_street_address(encoder, text: str) -> None:  # type: ignore[no-untyped-def]
    """Trial 15: such questions were never cached and moved off gpt-oss-120b, whose pii_policy refuses STREET_ADDRESS."""
    assert detect_pii(text, encoder.encode(text)) == ()


@pytest.mark.parametrize(
    ("text", "street"),
    [
        ("Bitte liefern an Hauptstraße 5, 10115 Berlin.", "Hauptstraße 5"),
        ("Ich wohne in der Altstadt, Marktplatz 3, 10115 Berlin.", "Marktplatz 3"),  # a house number: still one
    ],
)
def test_a_german_street_with_its_house_number_is_still_an_address(encoder, text: str, street: str) -> None:  # type: ignore[no-untyped-def]
    found = detect_pii(text, encoder.encode(text))
    start = text.index(street)
    assert [f.type for f in found if f.start <= start < f.end] == ["STREET_ADDRESS"], found


@pytest.mark.parametrize(
    ("text", "english"),
    [
        ("Hi Naomi!", True),  # no function word of any language: English, the head runs
        ("Please forward it to 4953 avenue de Perret, Morel-sur-Berthelot, 90985.", True),
        ("Ship it to 10 Main St, Chicago, IL 60601 for Dan Li", True),  # state codes, names: not foreign words
        ("Translate into English: Ich bin müde und ich will schlafen.", False),
        ("St. Kitts und Nevis was fun to visit!", True),  # one foreign word is a name or a loanword
        ("Wat is het verschil tussen een huis en een appartement?", False),
        ("Bu akşam için ne pişirebilirim?", False),
        ("猫山王是什么意思", False),
        ("Расскажи о лицензии", False),
        ("Darf mein Vermieter in der Altstadt die Kaution behalten?", False),  # was STREET_ADDRESS "mein Vermieter"
    ],
)
def test_language_gate(text: str, english: bool) -> None:
    assert is_english(text) is english


def test_a_long_text_is_scanned_for_cues_where_the_encoder_reads_it(encoder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Cues only name words the encoder read (their tokens' P(O)), so the unread middle of a long text is not
    scanned; names cued at the edges of both windows are found as a scan of the whole text finds them."""
    filler = "The committee reviewed the quarterly figures for the northern warehouses and the stores. "
    text = (filler * 11 + "Name: Clara Nogueira\n" + filler * 400 + "Dear Robert Smith, thanks for the note. "
            + "Thanks,\nMaria Lopez\n" + filler * 12)
    encoded = encoder.encode(text)
    assert encoded.windows == 2
    regions = pii._read_regions(encoded.offsets[:, 0], encoded.offsets[:, 1], len(text))
    assert len(regions) == 2 and regions[0][1] < len(text) // 4 and regions[1][0] > len(text) // 2
    assert find_cues(text, [(regions[0][1], regions[1][0])]) == []  # the middle holds no cue: none is lost
    found = detect_pii(text, encoded)
    monkeypatch.setattr(pii, "_read_regions", lambda starts, ends, length: [(0, length)])
    assert found == detect_pii(text, encoded)
    assert {text[f.start:f.end] for f in found if f.type == "PERSON"} >= {"Clara Nogueira", "Robert Smith"}


def _head_reads(text: str, entity: str, label: int) -> list[tuple[str, str]]:
    """One-hot head findings on `text` when the head tags the words of `entity` with `label` and nothing else."""
    at = text.index(entity)
    pieces = [(m.group(), label if at <= m.start() < at + len(entity) else 0)
              for m in re.finditer(r"\w+|[^\w\s]", text)]
    return [(f.type, text[f.start : f.end]) for f in _one_hot_head().spans(text, _tokens(text, pieces))]


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Explain Halvorsen's laws of motion with examples.", "Halvorsen"),
        ("How did Brannigan's pea experiments work?", "Brannigan"),
        ("What is Quell's uncertainty principle?", "Quell"),
        ("What did Marta Ilvane discover about radium?", "Marta Ilvane"),
        ("How did Tobias Renk predict the missing elements?", "Tobias Renk"),
        ("Who was Arvid Sollen?", "Arvid Sollen"),
        ("Why is Edda Varga important to genetics?", "Edda Varga"),
        ("Summarize Lena Okafor's contribution to crystallography.", "Lena Okafor"),
    ],
)  # fmt: skip
def test_a_name_framed_as_a_public_figure_is_no_person(text: str, name: str) -> None:
    """Issue 10: homework questions on famous scientists read as PERSON (5 of 31) and left gpt-oss-120b uncached."""
    assert _head_reads(text, name, 1) == []


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("What did Marta Ilvane say about the invoice?", "Marta Ilvane"),
        ("Who is Arvid Sollen in our team?", "Arvid Sollen"),
        ("What is Quell's number?", "Quell"),
        ("Ask Tobias Renk to discover the cause of the outage.", "Tobias Renk"),
        ("Lena Okafor's report is late.", "Lena Okafor"),
    ],
)  # fmt: skip
def test_a_private_name_in_a_question_is_still_a_person(text: str, name: str) -> None:
    assert _head_reads(text, name, 1) == [("PERSON", name)]


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("can I take Varnoxil with Delbrant", "Varnoxil"),
        ("can I take Varnoxil with Delbrant", "Delbrant"),
        ("Is Quellex safe while pregnant?", "Quellex"),
        ("How many mg of Tamsira is a normal dose?", "Tamsira"),
        ("Doravine side effects in children", "Doravine"),
        ("Should I switch from Paxomir to Lendra for anxiety?", "Lendra"),
        ("My doctor prescribed Orvella, should I take it on an empty stomach?", "Orvella"),
        ("Plavoxa and Zentrel interaction", "Plavoxa"),
        ("How do I clean my Marta Ilvane bag?", "Marta Ilvane"),
        ("Are Tobias Renk bridal shoes true to size?", "Tobias Renk"),
        ("What's in Lena Okafor's new collection this fall?", "Lena Okafor"),
        ("Where can I buy Arvid Sollen polos on sale?", "Arvid Sollen"),
        ("What did the court hold in Halvorsen v. Brannigan?", "Brannigan"),
        ("Explain the duty of care from Quell v. Renk.", "Quell"),
        ("What does In re Sollen say about juvenile rights?", "Sollen"),
    ],
)  # fmt: skip
def test_a_medication_brand_or_case_named_like_a_person_is_no_person(text: str, name: str) -> None:
    """Trials 17-19: drugs ("can I take Sudafed with Wellbutrin"), brands named after people ("my Louis Vuitton bag") and
    case names ("Hadley v. Baxendale") read as PERSON, which moved health, shop and legal questions off a model whose
    pii_policy refuses names and turned their cache off. The names here are made up: the framing decides."""
    assert _head_reads(text, name, 1) == []


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Can I take Sarah to school before the vaccine appointment?", "Sarah"),
        ("Can I take Olivia with Noah to the park this afternoon?", "Olivia"),
        ("Can I take Henry with me to the doctor's office?", "Henry"),
        ("Will you take Sarah?", "Sarah"),
        ("Can I take Sarah with friends?", "Sarah"),
        ("Did Sarah cause the accident?", "Sarah"),
        ("I need the dose of Sarah's medicine.", "Sarah"),
        ("I gave Sarah and Tom 5 mg of melatonin.", "Tom"),
        ("My Sarah's bag is broken, can it be fixed?", "Sarah"),
        ("How do I clean Jessica's bag after she spilled juice on it?", "Jessica"),
        ("I bought Megan shoes for her birthday, can she return them?", "Megan"),
        ("Ask Nora which shoes she wants for the wedding.", "Nora"),
        ("I saw Nora wearing heels.", "Nora"),
        ("Ryan's collection of vintage watches, how much is it worth?", "Ryan"),
        ("Who would win in chess, Priya vs. Marco?", "Marco"),
        ("My small claims case is Daniel Ortiz v. Brightline Rentals, what do I file next?", "Daniel Ortiz"),
        ("Can I switch from Ms. Delgado to Mr. Chen as my advisor?", "Delgado"),
    ],
)  # fmt: skip
def test_a_private_name_beside_medicine_shopping_or_law_is_still_a_person(text: str, name: str) -> None:
    assert _head_reads(text, name, 1) == [("PERSON", name)]


@pytest.mark.parametrize(
    ("text", "place"),
    [
        ("Why was the Manhattan Project based at Orrin Heights?", "Orrin Heights"),
        ("What happened at Kestrel Harbor in 1941?", "Kestrel Harbor"),
        ("Describe the architecture along Vane Avenue in New York.", "Vane Avenue"),
        ("Why is Pell Street the center of American finance?", "Pell Street"),
    ],
)  # fmt: skip
def test_a_street_asked_about_without_a_number_is_no_address(text: str, place: str) -> None:
    """Issue 10: famous places read as STREET_ADDRESS (4 of 20) moved physics and history questions to qwen3-4b."""
    assert _head_reads(text, place, 2) == []


@pytest.mark.parametrize(
    ("text", "place"),
    [
        ("Who lives at 12 Pell Street?", "12 Pell Street"),
        ("I live on Vane Avenue, can you recommend a gym nearby?", "Vane Avenue"),
        ("Can you send the parcel to Orrin Heights?", "Orrin Heights"),
        ("The bus station is on Kestrel Harbor.", "Kestrel Harbor"),
        ("What is the best cafe near my flat on Vane Avenue?", "Vane Avenue"),
    ],
)  # fmt: skip
def test_a_street_where_a_person_is_stays_an_address(text: str, place: str) -> None:
    assert _head_reads(text, place, 2) == [("STREET_ADDRESS", place)]
