"""Exact detectors for structured personal data: a regex proposes, a checksum or parser decides.

Regexes alone flag every long number; the validators (Luhn, IBAN mod-97, SSA rules, `ipaddress`,
libphonenumber) are what keep precision on prompts full of numbers (maths, code, logs). Identifiers with no checksum
(a medical record number, a passport number) and dates of birth count only where a cue word names them just before
the value ("MRN 9921044", "DOB 12/25/2019"): a number or a date alone names no one.
All patterns are compiled once at import; a text without a digit, '@' or ':' costs one regex scan.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import re
import unicodedata
from collections.abc import Callable, Iterator

import phonenumbers

from router.classifier.canonical import DASHES
from router.signals import PIIFinding

CREDIT_CARD = "CREDIT_CARD"
IBAN_CODE = "IBAN_CODE"
US_SSN = "US_SSN"
EMAIL_ADDRESS = "EMAIL_ADDRESS"
PHONE_NUMBER = "PHONE_NUMBER"
IP_ADDRESS = "IP_ADDRESS"
# A date of birth: a valid date with a birth cue just before it ("DOB", "born on"); a date alone is never one.
DATE_OF_BIRTH = "DATE_OF_BIRTH"
# An identifier of a person that a cue word names before it (MRN, member ID, passport number, EIN, ...), a Medicare
# Beneficiary Identifier by its own format, or an ITIN written as one (`_ssns`). One type for all: a policy that keeps
# one of them from a model keeps them all (README, "What counts as PII").
ID_NUMBER = "ID_NUMBER"
STRUCTURED_TYPES = (
    CREDIT_CARD, IBAN_CODE, US_SSN, EMAIL_ADDRESS, PHONE_NUMBER, IP_ADDRESS, DATE_OF_BIRTH, ID_NUMBER,
)  # fmt: skip

_PREFILTER = re.compile(r"[0-9@:]")
# Scripts written without spaces between words (Chinese, Japanese kana, Hangul, Thai, Lao, Myanmar, Khmer): a number
# or an address is written right against their letters ("手机号是13812345678", "010-1234-5678입니다" with Korean's
# particle, "邮箱zhangwei@qq.com谢谢"), so they end a value as a space does. `_W` is a letter or digit of every other
# script (and "_"): what a value may not touch, as `\w` was until 2026-12-02 (trial 15: 11 of 18 local phones missed).
_SPACELESS = (
    "\u0e00-\u0eff\u1000-\u109f\u1100-\u11ff\u1780-\u17ff\u2e80-\u2fdf\u3005-\u3007\u3021-\u3029"
    "\u3031-\u3035\u3038-\u303c\u3040-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff\ua960-\ua97f"
    "\uac00-\ud7ff\uf900-\ufaff\uff66-\uffdc\U00020000-\U0003ffff"
)
_W = f"[^\\W{_SPACELESS}]"
_CARD = re.compile(rf"(?<!{_W})(?<![.-])\d(?:[ -]?\d){{11,18}}(?!{_W}|-|\.\d)")
_IBAN = re.compile(rf"(?<!{_W})[A-Z]{{2}}\d{{2}}(?: ?[A-Z0-9]){{11,30}}(?!{_W})", re.IGNORECASE)
_SSN = re.compile(rf"(?<!{_W})(?<!-)(\d{{3}})([-. ]?)(\d{{2}})\2(\d{{4}})(?!{_W}|-)")
_EMAIL = re.compile(
    rf"(?<!{_W})(?<![.+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{{0,62}}[A-Za-z0-9_%+-])?"
    rf"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?\.)+[A-Za-z]{{2,24}}(?!{_W})"
)
_IPV4 = re.compile(rf"(?<!{_W})(?<!\.)(?:\d{{1,3}}\.){{3}}\d{{1,3}}(?!{_W}|\.\d)")
_IPV6 = re.compile(
    rf"(?<!{_W})(?<![:.])(?:[0-9A-Fa-f]{{0,4}}:){{2,7}}(?:[0-9A-Fa-f]{{1,4}}|(?:\d{{1,3}}\.){{3}}\d{{1,3}})?"
    rf"(?!{_W}|:|\.\d)"
)
_PHONE_END = rf"(?:\s?(?:x|ext\.?)\s?\d{{1,6}})?(?!{_W}|-\d|\.\d)"
_PHONE_START = rf"(?<!{_W})(?<![+.-])"
_PHONE = re.compile(
    _PHONE_START + r"(?:\+|00)?\d[\d ().-]{5,18}\d" + _PHONE_END
    + "|" + _PHONE_START + r"\(\d{2,5}\)[\d .-]{5,14}\d" + _PHONE_END,
    re.IGNORECASE,
)
# Dates, times and decimals have phone-like digit counts; they are never phone numbers, nor is a run that holds an
# ISO date ("174 2007-07-20", a table row) or starts with a fraction ("0.550 (133 of 242)": a figure and its count).
# A date ends its run: "06.12.34.56.78" is a French mobile.
_NOT_PHONE = re.compile(r"[0-3]?\d[./-][01]?\d[./-](?:19|20)?\d\d\b(?![.-]\d)|\d+\.\d+$|0\.\d+\s")
# An SSN's dashed layout is no phone's: one the SSN rules refuse (078-05-1120, the wallet-card number printed in
# millions of ads) was read as a PHONE_NUMBER instead (trial 13).
_SSN_LAYOUT = re.compile(r"\d{3}-\d{2}-\d{4}")
_ISO_DATE = re.compile(r"(?:19|20)\d\d-[01]\d-[0-3]\d")
# "(0)" marks the trunk digit dialled only at home ("+44 (0)20 7946 0958"); it is no group of its own.
_TRUNK = re.compile(r"\(0\)")
_DIGIT_GROUP = re.compile(r"\d+")
# Phones are written with dots or with dashes, never both: "252.204-7021" is a regulation clause, "34.685784-05" a
# timestamp's seconds and time zone.
_DOT_AND_DASH = re.compile(r"\d\.\d.*\d-\d|\d-\d.*\d\.\d")
# A cell of a number table: another number just before it on its line ("-0.568 13.066 13.740", "41596 19404 21828").
# Only numbers spaced, or with one decimal point, are read so: a phone written with a plus, a parenthesis, a dash
# between digits or dots between three groups stays one. (Not across lines: a postcode ends the line above many a
# phone number.)
_NUMBER_BEFORE = re.compile(r"\d[\d.,]*[ \t]+$")
_PHONE_WRITTEN = re.compile(r"[+(]|\d-\d|\d\.\d+\.\d")
# Four dotted numbers: an IP address or a version, unless a trunk starts them (North America's "1.", a European
# "0" before more digits: "0475.12.34.56" in Belgium, "044.668.18.00" in Switzerland; an address or a version never
# starts so).
_DOTTED_FOUR = re.compile(r"(?!1\.|0\d)\d+(?:\.\d+){3}")
# A military grid reference ("11S NU 48000 13000": zone, 100 km square, easting, northing) is a place, not a number.
_GRID_SQUARE = re.compile(r"\b\d{1,2}[C-X] ?[A-Z]{2} ?$")
# A JSON number ("created":1673222706) is a count, an ID or a time: JSON keeps phone numbers in strings.
_JSON_NUMBER = re.compile(r'":[ \t]*$')
# A number right before a file extension is a file name ("/tmp/ipykernel_27/4149060727.py").
_FILE_EXTENSION = re.compile(r"\.[A-Za-z]")
# National formats are ambiguous without a country: a number counts if it is possible in any of these.
_PHONE_REGIONS = ("US", "GB", "DE", "FR", "IN")
# Where a phone word is near (`_PHONE_CONTEXT`), a number none of the five above finds possible is tried as a mobile
# of these: countries whose mobiles are written at home without a trunk 0, which the five read (a Chinese mobile
# "13812345678", a Russian one with its trunk 8 "8 (912) 345-67-89", a Spanish one "612 34 56 78", a Brazilian one
# "(11) 91234-5678"). Mobiles only, of the countries checked on ShareGPT's train and dev turns: a Spanish landline or
# an Italian mobile was any "VAT registration number", "Part Number" or "Employer Identification Number".
_SAID_REGIONS = ("CN", "RU", "BR", "ES", "PT")
_POSSIBLE = phonenumbers.ValidationResult.IS_POSSIBLE
# Lines a business or an office rents, not a person's: toll-free, premium-rate, shared-cost and universal access numbers
# ("1-800-829-1040", the IRS; "0800 123 4567"). Only a number valid in its plan has such a type.
_BUSINESS_LINES = frozenset((phonenumbers.PhoneNumberType.TOLL_FREE, phonenumbers.PhoneNumberType.PREMIUM_RATE,
                             phonenumbers.PhoneNumberType.SHARED_COST, phonenumbers.PhoneNumberType.UAN))
# A phone word said a number is one nearby, in English and the languages users write to the router in (trial 15:
# "手机号是13812345678", "رقم هاتفي هو 0501234567", "Mi móvil es 612 34 56 78" went unseen). Words of the spaceless
# scripts, and Arabic and Hindi ones, which take attached prefixes or marks, are matched anywhere in a word.
_PHONE_CONTEXT = re.compile(
    r"\b(?:phone|call|mobile|cell|tel|fax|number|contact|reach|text|sms|messag|answer|whats ?app|dial|desk|office|"
    r"móvil|movil|número|numero|numéro|téléphone|telefone|celular|handy|nummer|appel|llam|rappel|anruf|"
    r"телефон|номер|звон|мобильн|сотов|điện thoại|sđt|gọi|nomor|telepon|hubungi)"
    r"|电话|電話|手机|手機|号码|號碼|联系|聯繫|短信|微信|携帯|番号|連絡|전화|휴대폰|핸드폰|번호|연락|"
    r"هاتف|جوال|رقم|اتصل|موبايل|फ़ोन|फोन|मोबाइल|नंबर|कॉल",
    re.IGNORECASE,
)
# A version's own word right before the number ("ruby version is 2.6.8.205", "build: 10.0.19041.1"); one further
# back names no version ("the build box at 81.2.69.160" is a machine).
_VERSION_BEFORE = re.compile(r"\b(?:version|release|build)(?:\s+(?:is|was|number|no\.?))?\s*[:=#]?\s*v?$",
                             re.IGNORECASE)
# A version pin ("grpc-stubs==1.53.0.6", "pkg>=2.0.1.4", "foo~=1.2.3.4"): dotted numbers after a comparison are a version.
_PIN_BEFORE = re.compile(r"[=<>~]\s*$")
# A package's file name ("grpc_stubs-1.53.0.6.dist-info", "foo-1.2.3.4.tar.gz", "-py3-none-any.whl"): a version.
_FILE_AFTER = re.compile(r"\.(?:dist-info|egg-info|tar|tgz|whl|zip|egg|jar|deb|rpm)\b|-py\d")
# A version of two or three numbers filling a table cell ("2.7.1", "v1.29.9"): the column of `pip list` (its Version and
# Latest columns), `conda list` or `docker images` beside a four-part one ("grpc-stubs   1.53.0.6", trial 12).
_VERSION_CELL = re.compile(r"v?\d+\.\d+(?:\.\d+)?(?=[ \t]|$)")
# Lines above and below a cell read for its column.
_COLUMN_LINES = 3
# Two numbers joined by a dash (`_is_range`).
_RANGE = re.compile(r"(\d+)-(\d+)")
_SSN_CONTEXT = re.compile(r"\b(?:ssn|social security|ss#|ss no)", re.IGNORECASE)
_EXTENSION = re.compile(r"\s?(?:x|ext\.?)\s?\d{1,6}$", re.IGNORECASE)
_NON_DIGIT = re.compile(r"\D")
# What the validators read past or as ASCII (`_plain`): a value the model reads whatever its spelling.
_TAGS = re.compile("[\U000e0000-\U000e007f]")  # tag characters, which the guards' text keeps (canonical.py)
_OTHER_DIGIT = re.compile(r"(?![0-9])\d")  # every Unicode decimal digit (category Nd) but the ASCII ones
_ASCII_DASHES = str.maketrans(dict.fromkeys(DASHES, "-"))

# IIN prefixes of the card networks (ISO/IEC 7812 ranges; Maestro is 12-19 digits, hence the 12).
_CARD_PREFIX = re.compile(r"^(?:[456]|2[2-7]|3[0-8]|2131|1800|0604)")
# Cards are printed unbroken or in fours (Amex 4-6-5, Diners 4-6-4); "27995 2020-08-20" is a table row whose 13
# digits pass Luhn by chance.
_CARD_GROUPS = re.compile(r"\d+$|\d{4}(?:[ -]\d{4})*(?:[ -]\d{1,4})?$|\d{4}[ -]\d{6}[ -]\d{4,5}$")
_SSN_BLOCKLIST = frozenset({"123456789", "078051120", "219099999"})
_CONTEXT_WINDOW = 40

# ISO 13616 registry: IBAN length per country code.
_IBAN_LENGTH = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def luhn_valid(digits: str) -> bool:
    """Luhn mod-10 checksum: catches every single-digit typo, so random numbers pass only 1 in 10."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_valid(compact: str) -> bool:
    """ISO 13616 check: registered length for the country, then mod-97 of the rearranged number is 1."""
    iban = compact.upper()
    if _IBAN_LENGTH.get(iban[:2]) != len(iban) or not iban.isalnum():
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def ssn_valid(area: str, group: str, serial: str) -> bool:
    """SSA rules: area not 000/666/9xx, group not 00, serial not 0000, and no advertised sample numbers."""
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    return area + group + serial not in _SSN_BLOCKLIST


def _cards(text: str) -> Iterator[PIIFinding]:
    for m in _CARD.finditer(text):
        digits = _NON_DIGIT.sub("", m.group())
        if (
            12 <= len(digits) <= 19
            and _CARD_GROUPS.match(m.group())
            and _CARD_PREFIX.match(digits)
            and luhn_valid(digits)
        ):
            yield PIIFinding(CREDIT_CARD, m.start(), m.end(), 1.0)


def _ibans(text: str) -> Iterator[PIIFinding]:
    for m in _IBAN.finditer(text):
        raw = m.group()
        want = _IBAN_LENGTH.get(raw[:2].upper())
        if want is None:
            continue
        # The regex may run on into the next word; keep exactly the registered number of characters.
        taken, end = 0, 0
        while taken < want and end < len(raw):
            taken += raw[end] != " "
            end += 1
        if taken == want and iban_valid(raw[:end].replace(" ", "")):
            yield PIIFinding(IBAN_CODE, m.start(), m.start() + end, 1.0)


def _ssns(text: str) -> Iterator[PIIFinding]:
    for m in _SSN.finditer(text):
        area, sep, group, serial = m.groups()
        if not ssn_valid(area, group, serial):
            if sep == "-" and area[0] == "9" and int(group) in _ITIN_GROUPS:
                yield PIIFinding(ID_NUMBER, m.start(), m.end(), 0.9)  # an ITIN, written as one
            continue
        # Nine bare digits are any ID, and dotted ones a version, an address or a figure ("123.45.6789" in a log):
        # only dashes (or spaces) are the SSN's own form, else a nearby "ssn"/"social security" must say it is one.
        if sep in ("-", " ") or _has_context(text, m.start(), m.end(), _SSN_CONTEXT):
            yield PIIFinding(US_SSN, m.start(), m.end(), 0.9 if sep else 0.7)


def _emails(text: str) -> Iterator[PIIFinding]:
    for m in _EMAIL.finditer(text):
        local = m.group().split("@", 1)[0]
        if ".." not in local:
            yield PIIFinding(EMAIL_ADDRESS, m.start(), m.end(), 1.0)


def _ips(text: str) -> Iterator[PIIFinding]:
    """Only a public address can point to someone's machine: loopback, private (RFC 1918, fc00::/7), link-local,
    shared (100.64/10), documentation, multicast and reserved ones (`ipaddress`) are the same on every network, so
    `127.0.0.1` or `192.168.1.1` in a config or a question names no one; an IPv4-mapped IPv6 address is judged as the
    IPv4 address it maps (`::ffff:192.168.0.1` in httpx's sources was the "address" `::ffff:192` until 2026-12-02)."""
    for pattern, parse in ((_IPV4, ipaddress.IPv4Address), (_IPV6, ipaddress.IPv6Address)):
        for m in pattern.finditer(text):
            candidate = m.group()
            if not _address_shaped(candidate, pattern is _IPV6):
                continue
            try:
                address = parse(candidate)
            except ValueError:
                continue
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                address = address.ipv4_mapped  # "::ffff:192.168.0.1" is the IPv4 address it maps
            if not address.is_global or address.is_multicast:
                continue
            if _VERSION_BEFORE.search(text, max(0, m.start() - _CONTEXT_WINDOW // 2), m.start()) or \
                    _PIN_BEFORE.search(text, max(0, m.start() - 4), m.start()) or _FILE_AFTER.match(text, m.end()) or \
                    _in_version_column(text, m.start()):
                continue  # "ruby version is 2.6.8.205", "grpc-stubs==1.53.0.6": dotted numbers under 256 are a version
            yield PIIFinding(IP_ADDRESS, m.start(), m.end(), 1.0)


def _in_version_column(text: str, start: int) -> bool:
    """A table cell in a column of versions: a line nearby holds a version of two or three numbers at the same place,
    as `pip list` prints them. A column of addresses (`kubectl get -o wide`) holds addresses only."""
    line = text.rfind("\n", 0, start) + 1
    column = start - line
    if column == 0 or text[start - 1] != " ":
        return False
    first = line
    for _ in range(_COLUMN_LINES):
        if first > 0:
            first = text.rfind("\n", 0, first - 1) + 1
    end = start
    for _ in range(_COLUMN_LINES + 1):
        if (end := text.find("\n", end + 1)) < 0:
            end = len(text)
            break
    near = text[first:end].split("\n")
    del near[text.count("\n", first, line)]  # the cell's own line
    return any(len(other) > column and other[column - 1] == " " and _VERSION_CELL.match(other, column)
               for other in near)


def _address_shaped(candidate: str, v6: bool) -> bool:
    """Valid but implausible forms are code and section numbers: `arr[1::2]`, "section 3.1.2.4"."""
    groups = [g for g in re.split(r"[:.]", candidate) if g]
    if v6:
        return len(groups) >= 4 or any(len(g) >= 3 for g in groups)
    return any(len(g) > 1 for g in groups)


def _phones(text: str) -> Iterator[PIIFinding]:
    for m in _PHONE.finditer(text):
        raw = m.group()
        digits = _NON_DIGIT.sub("", _EXTENSION.sub("", raw))
        if not 7 <= len(digits) <= 15 or _NOT_PHONE.match(raw) or _SSN_LAYOUT.fullmatch(raw) or \
                not _phone_shaped(text, m.start(), m.end()):
            continue
        punctuated = raw.startswith(("+", "(")) or any(c in raw for c in "-.()")
        # Digits alone or spaced are as often IDs, counts and table rows ("raport all 10 1900 19000"): without a
        # phone word nearby, bare digits never count and spaced ones only as a number valid in its region.
        said = _has_context(text, m.start(), m.end(), _PHONE_CONTEXT)
        if not (punctuated or said or " " in raw) or (_is_range(raw) and not said) or \
                _routing_number(text, m.start(), digits):
            continue
        in_context = punctuated or said
        number = _parse_phone("+" + raw[2:] if raw.startswith("00") else raw, said)
        if number is None or _fictional(number) or _business_line(raw, number):
            continue
        valid = phonenumbers.is_valid_number(number)
        if in_context or valid:
            yield PIIFinding(PHONE_NUMBER, m.start(), m.end(), 0.9 if valid else 0.6)


# "routing number 021000021", "ABA # 026009593": a bank's number (the ABA routing number, with its 3-7-1 checksum), not a
# person's; "number" is a phone word, so it was a PHONE_NUMBER (trial 19).
_ROUTING_BEFORE = re.compile(r"\b(?:routing|aba|rtn)(?:[ \t]+(?:transit[ \t]+)?(?:number|no\.?|#))?[ \t]*(?:is|:|#)?[ \t]*$",
                             re.IGNORECASE)


def _routing_number(text: str, start: int, digits: str) -> bool:
    """A valid ABA routing number named as one just before it."""
    if len(digits) != 9 or not _ROUTING_BEFORE.search(text, max(0, start - 40), start):
        return False
    weights = (3, 7, 1) * 3
    return sum(w * int(d) for w, d in zip(weights, digits, strict=True)) % 10 == 0


def _phone_shaped(text: str, start: int, end: int) -> bool:
    """Written as people write phone numbers, not as tables, versions, clauses or grid references do.

    Digit groups: past the country code, only the first may be a single digit ("1 800 ...", "+33 1 77 ..."); runs of
    small numbers ("frequency 2 2 17 27 22 1 2", "data: 0.3 0.5 0.7"), versions ("109.0.5414.87") and CAS numbers
    ("2060571-02-8") have single digits further in. Four dotted numbers are an IP address, public (_ips) or not, a
    made-up one ("111.11.1111.1111") or a version; only North America's "1." trunk starts a dotted phone of four.
    """
    raw = _TRUNK.sub("", _EXTENSION.sub("", text[start:end]))
    if _DOTTED_FOUR.fullmatch(raw):
        return False
    groups = _DIGIT_GROUP.findall(raw)
    if raw.startswith(("+", "00")):
        groups = groups[1:]
    if any(len(g) == 1 for g in groups[1:]) or _ISO_DATE.search(raw) or _DOT_AND_DASH.search(raw):
        return False
    # Without a "+" or a trunk "0" it is a North American or an Indian number (_parse_phone), written in groups of at
    # most five digits ("415-555-2671", "98765 43210"): "100234-88812" is an order number (trial 18).
    if len(groups) > 1 and not raw.lstrip("( ").startswith(("+", "0")) and max(map(len, groups)) > 5:
        return False
    before = text[max(0, start - _CONTEXT_WINDOW) : start]
    if _PHONE_WRITTEN.search(raw) is None and _NUMBER_BEFORE.search(before):
        return False
    return not (_GRID_SQUARE.search(before) or _JSON_NUMBER.search(before) or _FILE_EXTENSION.match(text, end))


def _is_range(raw: str) -> bool:
    """Two numbers of one length joined by a dash, the first smaller: a port range ("32768-65535"), years."""
    found = _RANGE.fullmatch(raw)
    return found is not None and len(found[1]) == len(found[2]) and int(found[1]) < int(found[2])


def _fictional(number: phonenumbers.PhoneNumber) -> bool:
    """North American numbers with 555 as area code or exchange ("555-555-5555", "(212) 555-0143") are the
    continent's placeholders: NANPA reserves 555-0100..0199 for fiction, and no 555 number reaches a person."""
    national = str(number.national_number)
    return number.country_code == 1 and len(national) == 10 and "555" in (national[:3], national[3:6])


def _business_line(raw: str, number: phonenumbers.PhoneNumber) -> bool:
    """A toll-free, premium-rate, shared-cost or UAN line (`_BUSINESS_LINES`) in every plan its national form is valid
    in: "0911 1234567" is premium-rate in the UK but a Nürnberg landline, "030 12345678" a UK UAN and a Berlin one."""
    if phonenumbers.number_type(number) not in _BUSINESS_LINES:
        return False
    if not raw.lstrip("( ").startswith("0"):
        return True
    for region in _PHONE_REGIONS[1:]:
        try:
            other = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(other) and phonenumbers.number_type(other) not in _BUSINESS_LINES:
            return False
    return True


def _parse_phone(raw: str, said: bool) -> phonenumbers.PhoneNumber | None:
    """International numbers parse as they are; a national number is tried in the regions its shape allows, and
    the first where it is valid wins over the first where it is merely possible ("06 12 34 56 78" is French). One
    possible in none of them, but `said` by a phone word, counts as a mobile of one of `_SAID_REGIONS`.

    A national number without a trunk "0" is a possible US number, or an Indian mobile, which is written without
    its "0" ("98765 43210"; India's other possible lengths, 8 to 12 digits, would make any ID one).
    """
    national = raw.lstrip("( ")
    if raw.startswith("+"):
        regions: tuple[str, ...] = ("US",)
    elif national.startswith("0"):
        regions = _PHONE_REGIONS[1:]
    else:
        regions = _PHONE_REGIONS[:1]
    possible = None
    for region in regions:
        try:
            number = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            continue
        # IS_POSSIBLE_LOCAL_ONLY (7 digits, no area code) is also true of postcodes like "4736-819".
        if phonenumbers.is_possible_number_with_reason(number) == _POSSIBLE:
            if phonenumbers.is_valid_number(number):
                return number
            possible = possible or number
    if not (raw.startswith("+") or national.startswith("0")):
        possible = _mobile(raw, ("IN",)) or possible
    if possible is None and said and not raw.startswith("+"):
        return _mobile(raw, _SAID_REGIONS)
    return possible


def _mobile(raw: str, regions: tuple[str, ...]) -> phonenumbers.PhoneNumber | None:
    """The national number `raw` as a mobile number of the first of `regions` where it is one, if any."""
    for region in regions:
        try:
            number = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.number_type(number) == phonenumbers.PhoneNumberType.MOBILE:
            return number
    return None


# Dates of birth and identifiers named by a cue word: the cues (`_CUE`) are tried where their first letters stand
# (`_CUE_STARTS`), then the value is read right after each cue. A cue word that names no value
# ("the patient's ID card", "born in the 1990s", "employee_id = ...": an underscore is code) finds nothing.
_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|"
          r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?")
_ORDINAL = r"(?:st|nd|rd|th)?"
# 12/25/2019, 25.12.2019, 04-17-12; 2019-12-25; March 3, 1985 / Mar 3rd 1985; 3 March 1985 / 3rd of Mar. 1985 / 18-Mar-1984.
_DATE = re.compile(
    r"(?:(?P<a>\d{1,2})(?P<s>[/.-])(?P<b>\d{1,2})(?P=s)(?P<y>\d{4}|\d{2})"
    r"|(?P<iy>\d{4})(?P<t>[/.-])(?P<im>\d{1,2})(?P=t)(?P<id>\d{1,2})"
    rf"|(?P<nm>{_MONTH})[ \t-]*(?P<nd>\d{{1,2}}){_ORDINAL},?[ \t-]*(?P<ny>\d{{4}})"
    rf"|(?P<dd>\d{{1,2}}){_ORDINAL}(?:[ \t]+of)?[ \t-]*(?P<dm>{_MONTH}),?[ \t-]*(?P<dy>\d{{4}})"
    r")(?!\d|[/.-]\d)",
    re.IGNORECASE,
)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
# Between a birth cue and its date: a few characters, none a digit or a sentence's end ("DOB (MM/DD/YYYY): ");
# after "born", only "on" or "in" may lead to it ("born 3/7/1958", "born in Leeds on 3 March 1985"; not "Born to Run
# was released 8/25/1975").
_DATE_AHEAD = r"(?=\d|" + _MONTH + r"[ \t-]*\d)"
_BIRTH_GAP = re.compile(r"[^\d\n.!?;]{0,30}?" + _DATE_AHEAD, re.IGNORECASE)
_BORN_GAP = re.compile(r"(?:[^\d\n.!?;]{0,25}?\b(?:on|in)\b)?[ \t]*[:,]?[ \t]*" + _DATE_AHEAD, re.IGNORECASE)
# Insurers and programs whose name before "ID" or "number" says whose member the value is ("Aetna ID W284719036").
_INSURERS = (
    r"aetna|humana|cigna|anthem|bcbs|blue[ \t]?cross|blue[ \t]?shield|kaiser|united[ \t]?health(?:care)?|uhc|"
    r"tricare|molina|wellcare|ambetter|highmark|caresource|centene|oscar|oxford|emblem|medicare|medicaid|medi-cal"
)
_ID_WORD = r"(?:id|identifier|number|no\.?|num|nbr|#)(?:[ \t]+(?:number|no\.?|#))?"
_CUE = re.compile(
    r"(?P<dob>\bd(?:ob\b|\.[ \t]?o\.[ \t]?b\b\.?)|\bdate[ \t]+of[ \t]+birth|\bbirth[ \t-]?date|"
    r"\bbirthday(?:[ \t]+is|[ \t]*:))|(?P<born>\bborn\b)"
    r"|(?P<account>\baccount[ \t]+(?:number|no\.?|#)|\bacct\.?[ \t]*(?:number|no\.?|#))"
    r"|(?P<id>\bmrn\b|\bmedical[ \t]+record(?:[ \t]+(?:number|no\.?|#))?|\bchart[ \t]+(?:number|no\.?|#)|"
    rf"\b(?:patient|member|subscriber|beneficiary|policy(?:holder)?|insurance|student|employee|staff)[ \t-]?{_ID_WORD}|"
    rf"\b(?:{_INSURERS})(?:[ \t]+(?:member|subscriber|beneficiary))?[ \t-]?{_ID_WORD}|\bmbi\b|\bhicn\b|"
    rf"\bpassport(?:[ \t]+{_ID_WORD})?|\bdriver'?s?[ \t]+licen[cs]e(?:[ \t]+{_ID_WORD})?|\bdl[ \t]*(?:number|no\.?|#)|"
    r"\bf?ein\b|\bemployer[ \t]+identification(?:[ \t]+(?:number|no\.?))?|\bitin\b|"
    r"\btaxpayer[ \t]+identification(?:[ \t]+(?:number|no\.?))?|\b(?:federal[ \t]+)?tax[ \t-]?id(?:[ \t]+(?:number|no\.?))?|"
    r"\bbank[ \t]+account(?:[ \t]+(?:number|no\.?|#))?|"
    r"\b(?:checking|savings|chequing)[ \t]+(?:account|acct\.?)(?:[ \t]+(?:number|no\.?|#))?)",
    re.IGNORECASE,
)
# The first letters of every cue `_CUE` matches, lower case: the cues are looked for only where one of these stands
# (`str.find` on the lowercased text), as scanning all of a 128k-character text with `_CUE` took ~60 ms.
_CUE_STARTS = (
    "dob", "d.o.", "d. o.", "date", "birth", "born", "account", "acct", "mrn", "medical", "chart", "patient", "member",
    "subscriber", "beneficiary", "policy", "insurance", "student", "employee", "staff", "mbi", "hicn", "passport",
    "driver", "dl", "ein", "fein", "employer", "itin", "taxpayer", "tax", "federal", "bank", "checking", "savings",
    "chequing", "aetna", "humana",
    "cigna", "anthem", "bcbs", "blue", "kaiser", "united", "uhc", "tricare", "molina", "wellcare", "ambetter",
    "highmark", "caresource", "centene", "oscar", "oxford", "emblem", "medicare", "medicaid", "medi-cal",
)  # fmt: skip
# Between an identifier's cue and its value: "MRN 99", "MRN: 99", "MRN #99", "member ID is 99", "(Aetna ID - W99".
_ID_GAP = re.compile(r"[ \t]*(?:(?:is|was|[:=#\-])[ \t]*){0,2}", re.IGNORECASE)
# The value: a token of letters, digits and inner dashes holding a digit; a short first group may go on in groups
# spaced as cards and MBIs are written ("1EG4 TE5 MK73", "1234 5678 9012"). Not one running into a path, an address,
# a decimal or a code identifier.
_ID_TOKEN = re.compile(r"(?=[A-Za-z0-9-]*\d)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?![\w/@]|[.-]\w)")
_ID_GROUPS = re.compile(r"(?: (?=[A-Za-z]*\d)[A-Za-z0-9]{2,6})+(?![\w/@]|[.-]\w)")
_ID_MIN_CHARS = 5
# A bank account number is named by "account number" only beside a routing number or a sort code; other account
# numbers (a customer's, a utility's) are "bank account number" or nothing.
_ROUTING = re.compile(r"\b(?:routing|sort[ \t]+code|aba)\b", re.IGNORECASE)
# The Medicare Beneficiary Identifier (CMS): 11 characters, digit, letter, letter-or-digit, digit, letter, letter-or-
# digit, digit, letter, letter, digit, digit; letters upper case without S, L, O, I, B, Z; written whole or 4-3-4.
_MBI_LETTER = "[AC-HJKMNP-RT-Y]"
_MBI = re.compile(
    rf"(?<![\w-])[1-9]{_MBI_LETTER}[{_MBI_LETTER[1:-1]}0-9]\d(-?){_MBI_LETTER}[{_MBI_LETTER[1:-1]}0-9]\d\1"
    rf"{_MBI_LETTER}{{2}}\d\d(?![\w-])"
)
# ITIN (IRS): 9NN-NN-NNNN with the middle group in 50-65, 70-88, 90-92 or 94-99; never a valid SSN (area 9xx).
_ITIN_GROUPS = frozenset((*range(50, 66), *range(70, 89), *range(90, 93), *range(94, 100)))


def birth_date_valid(found: re.Match[str]) -> bool:
    """`_DATE`'s match is a real calendar date no later than today, in 1890 or after; a numeric one either way round
    (12/25/2019 or 25/12/2019)."""
    groups = found.groupdict()
    if groups["a"]:
        a, b = int(groups["a"]), int(groups["b"])
        return any(_real_date(int(groups["y"]), m, d) for m, d in ((a, b), (b, a)))
    if groups["iy"]:
        return _real_date(int(groups["iy"]), int(groups["im"]), int(groups["id"]))
    named = ("nm", "nd", "ny") if groups["nm"] else ("dm", "dd", "dy")
    month, day, year = (groups[key] for key in named)
    return _real_date(int(year), _MONTHS.index(month[:3].lower()) + 1, int(day))


def _real_date(year: int, month: int, day: int) -> bool:
    """A day that exists and has passed (a birth date is never in the future); a two-digit year is the latest past
    one ("76" is 1976, "12" 2012)."""
    if year < 100:
        year += 2000 if year <= datetime.date.today().year % 100 else 1900
    try:
        return 1890 <= year and datetime.date(year, month, day) <= datetime.date.today()
    except ValueError:
        return False


def _named(text: str) -> Iterator[PIIFinding]:
    """Dates of birth and identifiers with their cue word just before them."""
    for cue in _cues(text):
        if cue["dob"] or cue["born"]:
            gap = (_BIRTH_GAP if cue["dob"] else _BORN_GAP).match(text, cue.end())
            date = _DATE.match(text, gap.end()) if gap else None
            if date and birth_date_valid(date):
                yield PIIFinding(DATE_OF_BIRTH, date.start(), date.end(), 0.9)
            continue
        if cue["account"] and not (_ROUTING.search(text, max(0, cue.start() - 2 * _CONTEXT_WINDOW),
                                                   cue.end() + 2 * _CONTEXT_WINDOW)):
            continue
        value = _ID_TOKEN.match(text, _ID_GAP.match(text, cue.end()).end())  # type: ignore[union-attr]
        if value is None:
            continue
        end = value.end()
        if len(value[0]) < _ID_MIN_CHARS and (more := _ID_GROUPS.match(text, end)):
            end = more.end()
        if sum(c.isalnum() for c in text[value.start():end]) >= _ID_MIN_CHARS:
            yield PIIFinding(ID_NUMBER, value.start(), end, 0.8)


def _cues(text: str) -> Iterator[re.Match[str]]:
    """`_CUE.finditer(text)`, tried only where one of `_CUE_STARTS` stands."""
    folded = text.lower()
    if len(folded) != len(text):  # a letter whose lower case is longer ("İ"): offsets would not match
        yield from _CUE.finditer(text)
        return
    starts = set()
    for key in _CUE_STARTS:
        at = folded.find(key)
        while at >= 0:
            starts.add(at)
            at = folded.find(key, at + 1)
    after = 0
    for start in sorted(starts):
        if start >= after and (cue := _CUE.match(text, start)) is not None:
            after = cue.end()
            yield cue


def _mbis(text: str) -> Iterator[PIIFinding]:
    for m in _MBI.finditer(text):
        yield PIIFinding(ID_NUMBER, m.start(), m.end(), 0.9)


def _has_context(text: str, start: int, end: int, pattern: re.Pattern[str]) -> bool:
    """A keyword shortly before the number, or just after it (as in "555 1234 (office)")."""
    return pattern.search(text, max(0, start - _CONTEXT_WINDOW), end + _CONTEXT_WINDOW // 2) is not None


# Order matters: on overlapping spans the earlier (more specific) detector wins.
_DETECTORS: tuple[Callable[[str], Iterator[PIIFinding]], ...] = (
    _emails, _ibans, _cards, _ssns, _named, _mbis, _ips, _phones,
)  # fmt: skip


def find_structured(text: str) -> list[PIIFinding]:
    """All validated structured findings in `text` (its canonical form, canonical.py), non-overlapping, in
    text order; offsets are into `text`."""
    plain, at = _plain(text)
    if _PREFILTER.search(plain) is None:
        return []
    kept: list[PIIFinding] = []
    for detect in _DETECTORS:
        for found in detect(plain):
            if not any(found.start < k.end and k.start < found.end for k in kept):
                kept.append(found)
    if at is not None:
        kept = [dataclasses.replace(f, start=at[f.start], end=at[f.end - 1] + 1) for f in kept]
    return sorted(kept, key=lambda f: f.start)


def _plain(text: str) -> tuple[str, list[int] | None]:
    """`text` as the validators read it: every decimal digit ASCII ("٥٣٦" is "536"), every dash '-', tag characters
    removed ("536\U000e0020-22-1234" is an SSN); with, when characters were removed, each kept one's offset in
    `text`."""
    text = text.translate(_ASCII_DASHES)
    if not text.isascii() and (digits := set(_OTHER_DIGIT.findall(text))):
        text = text.translate({ord(d): str(unicodedata.decimal(d)) for d in digits})
    if _TAGS.search(text) is None:
        return text, None
    at = [i for i, c in enumerate(text) if not _TAGS.match(c)]
    return "".join(text[i] for i in at), at
