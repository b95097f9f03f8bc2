"""What the detectors read of a text: its canonical form, so that what a model reads as "ignore" or "536-22-1234"
is read so by the guards and the PII rules however it is spelt (invisible characters, fullwidth forms, look-alike
letters, other dashes). Used by the classifier on every text it reads and by the exact PII validators on the rest
of a conversation; what is forwarded upstream or keyed by the cache is never changed here.
"""

from __future__ import annotations

import re
import unicodedata

# Unicode's Default_Ignorable_Code_Point set (DerivedCoreProperties.txt, Unicode 15.1): characters a renderer
# shows as nothing and a model's tokenizer drops or reads past, so they split a word or a number the screen would
# know ("ig\u200bnore", "5\ufe0f3\ufe0f6-22-1234"). Removed, except the Hangul fillers, which render as a blank
# (_BLANK), and the tag characters U+E0020-E007F (_SHORT_TAG_RUN).
_IGNORABLE = re.compile(
    "[\u00ad\u034f\u061c\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufe00-\ufe0f"
    "\ufeff\ufff0-\ufff8\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e001f"
    "\U000e0080-\U000e0fff]"
)
# Tag characters: invisible, and read by some models as the ASCII they encode. A run long enough to carry a sentence
# (TAG_RUN, 8 or more) is kept for the injection rules, which refuse it; a shorter one (an emoji flag's, or one
# splitting a word: "ign\U000e0020ore") is removed, as the ignorable ones are: the reader sees the word whole, and the
# encoder read it as two pieces (the PII validators read past every tag: router/classifier/pii_rules.py).
TAG_RUN = 8
_TAG = "\U000e0020-\U000e007f"
_SHORT_TAG_RUN = re.compile(f"(?<![{_TAG}])[{_TAG}]{{1,{TAG_RUN - 1}}}(?![{_TAG}])")
# Blank-looking fillers (the Hangul ones are default-ignorable, U+2800 is the blank Braille pattern): a reader sees a
# space, so the guards read one ("Ignore\u3164all previous instructions"); between the characters of a number they
# are removed, as the ignorable ones are ("536\u3164-22-1234" is an SSN).
_BLANK = "\u115f\u1160\u2800\u3164\uffa0"
# The dashes (Unicode category Pd, Unicode 14) and the minus sign: a number's separators however they are spelt.
DASHES = ("-\u058a\u05be\u1400\u1806\u2010\u2011\u2012\u2013\u2014\u2015\u2e17\u2e1a\u2e3a\u2e3b\u2e40"
          "\u2e5d\u301c\u3030\u30a0\ufe31\ufe32\ufe58\ufe63\uff0d\U00010ead\u2212")
_NUMBER_CHAR = f"[\\d{re.escape(DASHES)}]"
_BLANK_IN_NUMBER = re.compile(f"(?<={_NUMBER_CHAR})[{_BLANK}]+(?={_NUMBER_CHAR})")
_BLANKS = re.compile(f"[{_BLANK}]")
# Cyrillic and Greek letters drawn like Latin ones, folded only inside a word that mixes them with Latin letters
# ("Ignоrе" with a Cyrillic о and е): a Russian or Greek word is left as it is.
_LOOKALIKES = str.maketrans(
    "аеорсухіјѕԁһӏԛԝАВЕКМНОРСТХУІЈЅαικνορυΑΒΕΖΗΙΚΜΝΟΡΤΥΧ",
    "aeopcyxijsdhlqwABEKMHOPCTXYIJSaikvopuABEZHIKMNOPTYX",
)
_LOOKALIKE = re.compile(f"[{''.join(map(chr, _LOOKALIKES))}]")
_LATIN = re.compile("[A-Za-z\u00c0-\u024f\u1e00-\u1eff]")
# A word holding a look-alike; linear: the lookahead runs from word starts only, the word is taken possessively.
_LOOKALIKE_WORD = re.compile(f"\\b(?=\\w*?{_LOOKALIKE.pattern})\\w++")
def canonical(text: str) -> str:
    """`text` as the guards and the PII rules read it: default-ignorable characters and short tag runs removed, blank
    fillers a space, NFKC (fullwidth and compatibility forms folded: "ｉｇｎｏｒｅ" is "ignore", "１２３" is "123"), and look-alike
    letters in a word that mixes them with Latin ones read as the Latin letters they pass for."""
    text = _SHORT_TAG_RUN.sub("", _IGNORABLE.sub("", text))
    if _BLANKS.search(text):
        text = _BLANKS.sub(" ", _BLANK_IN_NUMBER.sub("", text))
    text = unicodedata.normalize("NFKC", text)
    return _LOOKALIKE_WORD.sub(_unmixed, text) if _LOOKALIKE.search(text) else text


def _unmixed(word: re.Match[str]) -> str:
    text = word.group()
    return text.translate(_LOOKALIKES) if _LATIN.search(text) else text
