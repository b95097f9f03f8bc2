"""Street addresses by shape alone: where in a long text one may stand, and the complete postal addresses an exact
rule finds.

Past the encoder's bound for reading a long text's middle whole (encoder.MIDDLE_WINDOWS), the head reads windows
around these places only (Encoder.read_around, EncoderClassifier._pii): an address the head can find almost always
has a shape a cheap scan sees, a name does not. A complete US, Canadian or UK address (house number, street and its
type, town, state or province and ZIP or postcode) is found exactly (`full_addresses`), beside the head, as the
structured types are: nothing else has that shape, and the head missed some ("1842 Maple Ridge Drive, Sacramento, CA
95822", trial 19).
"""

from __future__ import annotations

import re

# The shapes (`address_candidates`): a house number before or after a capitalised word ("221B Baker", "Hauptstraße 5",
# "48/65\nMann"), an abbreviated street ("R. das Flores", "Av. Cruz"), a capitalised street type after a word ("Oliver
# Loop": USPS Publication 28's suffixes and a few Indian ones), a street word before a name ("avenue de Leroy", "Calle
# Mayor"), a compound street ("Etzlerstr.", "Anne-Kathrin-Kensy-Weg"), a US military address ("FPO AA"). Chosen on the
# address spans the head finds in bench/pii_eval's templates and offline/data/pii_chat_dev.jsonl (bench/pii_middle.py
# --prefilter): one in these shapes, or within 40 characters of one.
_NUMBERED = re.compile(
    r"(?<![\w.])\d{1,5}[A-Za-z]?(?:[-/]\d{1,5})?,?[ \t]*\n?[ \t]*[A-ZÀ-Þ][a-zà-ÿ]"
    r"|\b[A-ZÀ-Þ][a-zà-ÿ]+\.?,? \d{1,5}[a-zA-Z]?\b(?![.:]\d)"
    r"|(?<![\w.])(?:R|Av)\. [A-ZÀ-Þd]|\b[FAD]PO A[AEP]\b"
)
_WORD = re.compile(r"[^\W\d_]{2,}")
_STREET_TYPES = frozenset(_WORD.findall(
    "Alley Avenue Ave Boulevard Blvd Branch Bridge Brook Burg Bypass Camp Canyon Cape Causeway Center Circle Cir Cliff "
    "Club Common Corner Course Court Ct Cove Creek Crescent Crest Crossing Curve Dale Dam Divide Drive Dr Estate "
    "Expressway Extension Falls Ferry Field Flat Flats Ford Forest Forge Fork Fort Freeway Garden Gardens Gateway Glen "
    "Green Grove Harbor Haven Heights Highway Hwy Hill Hills Hollow Inlet Island Isle Junction Key Knoll Lake Land "
    "Landing Lane Ln Light Lights Loaf Lock Lodge Loop Mall Manor Meadow Meadows Mews Mill Mills Mission Motorway Mount "
    "Mountain Neck Orchard Oval Overpass Park Parkway Pass Path Pike Pine Pines Place Pl Plain Plains Plaza Point Port "
    "Ports Prairie Radial Ramp Ranch Rapid Rapids Rest Ridge River Road Rd Route Row Run Shoal Shore Shores Skyway "
    "Spring Springs Spur Square Sq Station Stravenue Stream Street St Summit Terrace Throughway Trace Track Trafficway "
    "Trail Tunnel Turnpike Underpass Union Valley Via Viaduct View Village Ville Vista Walk Wall Way Well Wells Close "
    "Gate Ganj Marg Nagar Chowk Colony Zila"))
_STREET_WORDS = frozenset(_WORD.findall(
    "rue rua avenue avenida calle chemin allée boulevard impasse praça largo travessa pasaje acceso camino carrer "
    "glorieta paseo pasadizo plaza vial strada piazza corso viale"))
_COMPOUND_ENDS = ("straße", "strasse", "weg", "gasse", "platz", "laan", "straat", "plein", "gracht", "allee",
                  "damm", "ufer", "dreef", "kade", "singel", "steeg", "baan", "hof", "pad")
_AFTER_STREET = frozenset(("", " ", "\t", "\n", ",", "."))
# A number a word before it names as something other than a house number: a part of a document ("Section 21.
# Insurance", "Article 7", "Clause 12(b)", "Schedule 3", "§ 4.2") or a shop's or an office's reference ("order 48213",
# "invoice 5521", "case 2024-117"). Contracts cross-reference dozens of them, and each was a place for the head to read
# (trial 19: a 15k-character lease held more than its windows, so it was unscreened); the head read "order 48213" as
# an address (trial 18). A unit, a box or a route ("Suite 200", "PO Box 12", "Route 66") is part of an address: none.
LABELLED_NUMBER = re.compile(
    r"(?:\b(?:sections?|sec|articles?|art|clauses?|schedules?|chapters?|parts?|paragraphs?|para|subsections?|"
    r"exhibits?|appendix|appendices|annex(?:es)?|rules?|titles?|items?|pages?|figures?|fig|tables?|steps?|"
    r"volumes?|vol|orders?|invoices?|tickets?|cases?|claims?|receipts?|bookings?|reservations?|ref|reference|"
    r"account|acct|sku|model)\.?|§§?)[ \t]*(?:no\.?|nos\.?|number|#)?[ \t]*#?\d[\d.()a-z-]*",
    re.IGNORECASE,
)


def address_candidates(text: str, start: int, end: int) -> list[int]:
    """Where in text[start:end] a street address the head could find may stand (`_NUMBERED`, `_STREET_TYPES`, ...),
    as sorted character offsets: a long text's unread middle is read by the head around these only. A word scan and
    one regex, where one regex of all the shapes took three times as long."""
    labelled = [m.span() for m in LABELLED_NUMBER.finditer(text, start, end)]
    found = [m.start() for m in _NUMBERED.finditer(text, start, end)
             if not any(a < m.end() and m.start() < b for a, b in labelled)]
    for m in _WORD.finditer(text, start, end):
        word, at, stop = m.group(), m.start(), m.end()
        if word in _STREET_TYPES:
            previous = text[text.rfind(" ", 0, at - 1) + 1 : at - 1]
            street = text[at - 1 : at] == " " and previous[:1].isupper() and text[stop : stop + 1] in _AFTER_STREET
        elif word[0].isupper():
            lower = word.lower()
            compound = lower.endswith(_COMPOUND_ENDS) or lower.endswith("str") and text[stop : stop + 1] == "."
            street = compound and (len(word) > 6 or text[at - 1 : at] == "-") or lower in _STREET_WORDS
        else:
            street = word in _STREET_WORDS and text[stop : stop + 1] == " "
        if street:
            found.append(at)
    return sorted(found)


# A complete postal address (`full_addresses`): a house number, up to four street words (capitalised, or an ordinal
# "2nd") and a street type (`_STREET_TYPES` with USPS Publication 28's common abbreviations), a direction and a unit
# at will, then a town of up to four capitalised words and a US state and ZIP, a Canadian province and postal code, or
# a UK postcode. Every part is required: a number before capitalised words alone is a heading or a product.
_POSTAL_TYPES = sorted(_STREET_TYPES | {"Pkwy", "Ter", "Terr", "Trl", "Cres", "Hts", "Pt", "Rte", "Xing", "Expy",
                                        "Fwy", "Cv", "Crt", "Ctr", "Sta"}, key=len, reverse=True)
_US_STATES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|OH|OK|"
    "OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR|GU|VI|AS|MP"
)
_CA_PROVINCES = "AB|BC|MB|NB|NL|NS|NT|NU|ON|PE|QC|SK|YT"
_WORD_CAP = r"[A-ZÀ-Þ][\w'’.-]*"
_FULL_ADDRESS = re.compile(
    r"(?<![\w.,/-])\d{1,6}[A-Z]?(?:-\d{1,4})?[ \t]+"
    r"(?:(?:[NSEW]\.?|North|South|East|West|N[EW]|S[EW])[ \t]+)?"
    rf"(?:(?:{_WORD_CAP}|\d{{1,3}}(?:st|nd|rd|th))[ \t]+){{1,4}}"
    rf"(?:{'|'.join(_POSTAL_TYPES)})\b\.?"
    r"(?:[ \t]+(?:N|S|E|W|NE|NW|SE|SW|North|South|East|West)\b\.?)?"
    r"(?:,?[ \t]+(?:Apt|Apartment|Suite|Ste|Unit|Fl|Floor|Rm|Room|#)\.?[ \t]*#?[\w-]{1,6})?"
    rf",?\s+{_WORD_CAP}(?:[ \t]+{_WORD_CAP}){{0,3}},?\s+"
    rf"(?:(?:{_US_STATES})[ \t]+\d{{5}}(?:-\d{{4}})?"
    rf"|(?:{_CA_PROVINCES})[ \t]+[ABCEGHJ-NPRSTVXY]\d[ABCEGHJ-NPRSTV-Z][ -]?\d[ABCEGHJ-NPRSTV-Z]\d"
    r"|[A-Z]{1,2}\d[A-Z\d]?[ \t]?\d[ABD-HJLNP-UW-Z]{2})(?![\w-])"
)


def full_addresses(text: str) -> list[tuple[int, int]]:
    """The (start, end) of each complete US, Canadian or UK postal address in `text` (`_FULL_ADDRESS`): found by
    shape alone, in any language, where the head reads English only and missed some."""
    return [m.span() for m in _FULL_ADDRESS.finditer(text)]
