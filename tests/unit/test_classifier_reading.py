"""Whether the encoder reads a text (router/classifier/reading.py), on the shipped tokenizer's real tokens."""

from __future__ import annotations

import numpy as np
import pytest

from router.classifier.encoder import Encoder
from router.classifier.reading import READ_BELOW, reads, unread_share
from tests.unit.test_classifier_encoder import MODEL_DIR


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder(MODEL_DIR)


def share(encoder: Encoder, text: str) -> float:
    encoded = encoder.tokenize(text)
    return unread_share(text, np.array(encoded.ids), np.array(encoded.offsets).reshape(-1, 2))


@pytest.mark.parametrize("text", [
    "What are the main tourist sights of Cairo?",
    "¿Cuál es la mejor manera de aprender inglés rápido?",
    "Tôi có nên ăn cá khi mang thai không?",  # Vietnamese: accents stripped, still whole Latin words
    "Decode aW5mbw==" + "A" * 120 + " please",  # a Latin word over 100 characters is one [UNK], still read
    "What is the role of a brand slogan\n \n \n \n 지금 번역하기",  # English with a browser extension's Korean tail
])
def test_latin_script_text_is_read(encoder: Encoder, text: str) -> None:
    assert share(encoder, text) < READ_BELOW
    assert reads(text, np.array(encoder.tokenize(text).ids), np.array(encoder.tokenize(text).offsets).reshape(-1, 2))


@pytest.mark.parametrize("text", [
    "ما هي أهم المعالم السياحية في القاهرة؟",
    "서울의 주요 관광지는 어디인가요?",
    "मेरा बेटा पढ़ाई में ध्यान नहीं देता",
    "一百美元换多少人民币？",
    "東京の主な観光地はどこですか？",
    "ทำเป็นรูปแบบตาราง",
])
def test_arabic_hangul_devanagari_cjk_and_thai_are_not_read(encoder: Encoder, text: str) -> None:
    assert share(encoder, text) >= READ_BELOW


def test_the_encoders_own_pass_says_so(encoder: Encoder) -> None:
    """The classifier judges the tokens of the pass it already made (EncodedText.ids and offsets)."""
    arabic = encoder.encode("كيف أطبخ الأرز بشكل صحيح؟")
    english = encoder.encode("How do I cook rice properly?")
    assert not reads("كيف أطبخ الأرز بشكل صحيح؟", arabic.ids, arabic.offsets)
    assert reads("How do I cook rice properly?", english.ids, english.offsets)


def test_a_text_without_letters_is_read() -> None:
    assert unread_share("123 456", np.array([1, 2]), np.array([[0, 3], [4, 7]])) == 0.0
