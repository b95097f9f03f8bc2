"""Whether a text is English, for the PII token head: names and addresses are looked for in English text only.

The head and its name cues learnt names from English templates and English chat, through uncased MiniLM word pieces
and a "starts with a capital" bit. In other languages that evidence means nothing: German capitalises every noun
("Apfelkuchen", "Steuer-ID"), and an unfamiliar opening word ("Wie viel", "Jak mogę") looks to the head like an
unfamiliar name. On non-English ShareGPT dev prompts it flagged 10 of 105 (classifier README). The structured types
have exact validators and keep working in every language.

The test is cheap and errs towards English: a text is not English when most of its letters are outside the Latin
script (Chinese, Korean, Cyrillic...), or when it holds two or more function words of another language and more of
them than English ones. A text with neither kind ("Hi Naomi!", "Ned Stark, Sam Tarly") stays English, so English names
keep their recall; transliterated text without known function words (a Marathi hymn) also stays English.
"""

from __future__ import annotations

import re

# Only the opening characters are read: a few hundred words decide the language, and the whole of a 128k-character
# prompt (classifier.max_scan_chars) cost 20 ms; 2,000 cost 0.3 ms.
SAMPLE_CHARS = 2000
# Lowercase function words of English; a text needs more foreign ones than these to count as foreign. Words that are
# also frequent in another language ("an", "in", "am", "was", "also" in German; "is" in Dutch; "a", "no", "me" in
# Spanish; "to", "do", "i" in Polish; "on", "so") count for neither side.
ENGLISH_WORDS = frozenset((
    "about", "all", "and", "any", "are", "as", "at", "be", "been", "but", "by", "can", "could", "did", "does", "don't",
    "for", "from", "get", "give", "had", "has", "have", "he", "hello", "her", "here", "hey", "hi", "his", "how", "i'm",
    "if", "into", "it", "it's", "its", "just", "like", "make", "more", "my", "need", "not", "of", "one", "or", "our",
    "please", "she", "should", "some", "tell", "than", "thank", "thanks", "that", "the", "their", "them", "then",
    "there", "these", "they", "this", "those", "us", "use", "want", "we", "were", "what", "when", "where", "which",
    "who", "why", "will", "with", "would", "write", "you", "your",
))  # fmt: skip
# Frequent function words of the languages seen in chat (German, Dutch, French, Spanish, Portuguese, Italian, the
# Scandinavian languages, Polish, Czech and Croatian, Turkish, Indonesian, Vietnamese, romanised Hindi and Urdu).
# Left out: English words ("die", "man", "was", "comment", "sans", "hat"), first names ("Ben", "Jo", "Dan", "Li",
# "Kay", "Mir"), name and place particles ("de", "da", "van", "von", "der", "la", "los", "las", "el": "Leonardo da
# Vinci", "Las Vegas"), US state and country codes ("IL", "MA", "MI", "KE", "KA"), and short words that code and
# English use ("en", "es", "se", "un", "com", "var", "os", "em", "du", "im", "su", "est", "et", "e", "o", "y", "i").
FOREIGN_WORDS = frozenset((
    "und", "ist", "nicht", "ein", "eine", "einen", "einem", "einer", "ich", "wie", "mit", "für", "auf", "auch", "sich",
    "zu", "bitte", "kannst", "kann", "gibt", "mein", "meine", "meinen", "wo", "oder", "aber", "sind", "wird", "werden",
    "haben", "habe", "über", "nach", "bei", "noch", "nur", "schon", "wenn", "dass", "sie", "wir", "ihr", "uns", "diese",
    "dieser", "dieses", "welche", "viel", "sehr", "warum", "wer", "kein", "keine", "vom", "zum", "zur", "ob", "weil",
    "hast", "darf", "liegt", "heißt", "wegen", "ohne", "gegen",
    "het", "een", "ik", "jij", "niet", "zijn", "wat", "voor", "dat", "deze", "dit", "ook", "maar", "mijn", "kunnen",
    "kun", "zou", "wordt", "naar", "bij", "nog", "heb", "heeft", "welke", "waar", "waarom", "zoals", "graag",
    "une", "je", "tu", "vous", "nous", "elle", "pour", "pas", "que", "qui", "dans", "sur", "avec", "ce", "cette", "mes",
    "pourquoi", "quel", "quelle", "sont", "être", "avoir", "faire", "peux", "très", "mais", "où", "aussi", "moi",
    "suis",
    "una", "por", "para", "qué", "cómo", "como", "más", "pero", "este", "esta", "estoy", "puedes", "puede", "hola",
    "muy", "sobre", "también", "dónde", "cuál", "cual", "tiene", "hacer", "quiero", "gracias", "entre", "porque",
    "uma", "não", "você", "meu", "minha", "isso", "são", "está", "muito", "obrigado", "fazer", "seu", "sua", "ao",
    "gli", "che", "è", "sono", "questo", "questa", "puoi", "cosa", "perché", "anche", "più", "fare", "ciao", "grazie",
    "voglio", "vorrei",
    "och", "att", "det", "är", "jag", "inte", "som", "på", "har", "og", "ikke", "jeg", "af", "hvad", "hvordan",
    "betyder", "vad", "hur", "kan", "vil", "skal", "deg", "fra", "eller", "hvor", "meg", "hva",
    "jak", "czy", "nie", "się", "jest", "że", "mogę", "może", "moje", "moja", "mój", "swoje", "dla", "przez", "oraz",
    "które", "jaki", "jakie", "gdzie", "proszę", "na",
    "ako", "kako", "što", "ili", "za",
    "bir", "ve", "bu", "için", "nasıl", "nedir", "neden", "ile", "çok", "daha", "yok", "sen", "gibi", "olan", "olarak",
    "nerede", "nereler", "hangi", "mı",
    "di", "itu", "dengan", "untuk", "tidak", "saya", "bagaimana", "dari", "akan", "bisa",
    "tôi", "của", "và", "là", "có", "không", "những", "các", "được", "trong", "này", "một", "cho", "với", "nên", "làm",
    "cách", "gì",
    "hai", "hain", "kya", "aur", "nahi", "mujhe", "mujhy", "yeh", "kr", "karo", "batao", "hy", "sy", "bhi", "tha",
))  # fmt: skip
# A word standing alone: not a piece of a hyphenated name, a postcode, a domain or a path ("Morel-sur-Berthelot",
# "8NA", "www.auch.net"), where a foreign-looking piece says nothing about the language of the text.
_WORD = re.compile(r"(?<![\w\-.@/])[^\W\d_]+(?:['’][^\W\d_]+)?(?![\w\-@/]|\.\w)")
_LETTER = re.compile(r"[^\W\d_]")
_LATIN_LETTER = re.compile(r"[A-Za-z\u00c0-\u024f\u1e00-\u1eff]")



def is_english(text: str) -> bool:
    """False when `text` is mostly in a non-Latin script, or has two or more foreign function words and more of them
    than English ones (one alone is a loanword or a place: "St. Kitts und Nevis was fun", "Das Boot")."""
    text = text[:SAMPLE_CHARS]
    if len(_LATIN_LETTER.findall(text)) * 2 < len(_LETTER.findall(text)):
        return False
    foreign = english = 0
    for word in _WORD.findall(text.lower()):
        foreign += word in FOREIGN_WORDS
        english += word in ENGLISH_WORDS
    return foreign < 2 or foreign <= english
