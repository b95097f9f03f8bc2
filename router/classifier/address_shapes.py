"""Where in a long text a street address may stand, by shape alone: the PII token head reads an unread middle there.

Past the encoder's bound for reading a long text's middle whole (encoder.MIDDLE_WINDOWS), the head reads windows
around these places only (Encoder.read_around, EncoderClassifier._pii): an address the head can find almost always
has a shape a cheap scan sees, a name does not.
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


def address_candidates(text: str, start: int, end: int) -> list[int]:
    """Where in text[start:end] a street address the head could find may stand (`_NUMBERED`, `_STREET_TYPES`, ...),
    as sorted character offsets: a long text's unread middle is read by the head around these only. A word scan and
    one regex, where one regex of all the shapes took three times as long."""
    found = [m.start() for m in _NUMBERED.finditer(text, start, end)]
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
