"""How well the encoder reads a text, from the tokens of the pass the router already made (no second pass).

The encoder's vocabulary is English uncased BERT's. Latin-script text comes out in whole words and word pieces;
Arabic, Devanagari, Hangul, Thai, CJK and kana come out one letter (or one jamo) per token, or as [UNK]. Texts of one
frame then embed close whatever their content words ("ما هي أفضل طريقة ..." questions at cosine 0.78-0.91), and
nothing downstream trained on English tells them apart (trial 15: 11 of 24 different Arabic questions were served
an earlier one's answer). `unread_share` is the share of a text's letters that fall in such tokens; a text is read
when it is under READ_BELOW (measured on ShareGPT TRAIN turns: router/classifier/README.md, "Text the encoder does
not read").
"""

from __future__ import annotations

import numpy as np

UNK_ID = 100
READ_BELOW = 0.4


def _latin(char: str) -> bool:
    """Basic Latin, Latin-1, Latin Extended A/B and Latin Extended Additional (Vietnamese)."""
    return char <= "\u024f" or "\u1e00" <= char <= "\u1eff"


def unread_share(text: str, ids: np.ndarray, offsets: np.ndarray) -> float:
    """The share of the letters under `ids` (spans `offsets` in `text`) that lie in a token of non-Latin letters that
    is [UNK] or one character long; 0.0 for a text without letters. Latin text is read even so: a one-letter token
    ("a", "I", "x") is a word, and an [UNK] there is a word over 100 characters (a base64 blob, a long identifier)."""
    if text.isascii():  # most prompts: no letter outside Latin, and the loop below is ~0.2 ms at 512 tokens
        return 0.0
    letters = unread = 0
    for token, (start, end) in zip(ids.tolist(), offsets.tolist(), strict=True):
        span = [c for c in text[start:end] if c.isalpha()]
        letters += len(span)
        if span and (token == UNK_ID or end - start == 1) and not any(map(_latin, span)):
            unread += len(span)
    return unread / letters if letters else 0.0


def reads(text: str, ids: np.ndarray, offsets: np.ndarray) -> bool:
    """Whether the encoder reads `text`: fewer than READ_BELOW of its letters are unread (`unread_share`)."""
    return unread_share(text, ids, offsets) < READ_BELOW
