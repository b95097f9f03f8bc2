"""Where the text itself says a name or a place is a public one: "Newton's laws", "What did Marie Curie discover?",
"Why was the Manhattan Project based at Los Alamos?".

The token head sees uncased word pieces and one token either side; it reads a famous scientist as it reads a
coworker, and a famous street or site as a street address. Homework and general-knowledge questions are full of
both, and each such finding moved a request off a model whose pii_policy refuses the type and turned its cache off
(issue 10). The same holds for drugs, brands named after people and case names ("can I take Sudafed with Wellbutrin",
"my Louis Vuitton bag", "Hadley v. Baxendale"; trials 17-19). A human tells them apart by the framing, which these
patterns read: they only ever drop a head finding.
"""

from __future__ import annotations

import re

# A name's eponymous result or its place in history: "Ohm's law", "Mendel's pea experiments", "Schrödinger's cat
# thought experiment", "Rosalind Franklin's contribution", "Alan Turing's role in". "number" is left out: "X's
# number" asks for a person's phone (pii_cues).
_EPONYM = re.compile(
    r"(?:'s|’s|'|’)\s+(?:[^\W\d_][\w-]*\s+){0,3}?"
    r"(?:laws?|theor(?:y|ies|em|ems)|principles?|equations?|constant|formula|experiments?|effect|paradox|conjecture|"
    r"hypothesis|lemma|razor|postulates?|contributions?|discover(?:y|ies)|inventions?|role\s+in|legacy|reign)\b",
    re.IGNORECASE,
)
# What a public figure is asked about: "What did Marie Curie discover", "How did Mendeleev predict". The verbs are
# those of discoveries, works and history; "say", "write" and "do" are asked about coworkers as often.
_DID_BEFORE = re.compile(r"\b(?:did|does|do)\s+$", re.IGNORECASE)
_FEAT_AFTER = re.compile(
    r"\s+(?:discover|invent|prove|propose|formulate|predict|theori[sz]e|observe|contribute|paint|compose|pioneer|"
    r"conquer|found|establish|publish)\b",
    re.IGNORECASE,
)
# "Who was Srinivasa Ramanujan?": a question about a person's whole life, in the past tense.
_WHO_WAS_BEFORE = re.compile(r"(?:^|[.!?\n]\s*)who\s+(?:was|were)\s+$", re.IGNORECASE)
# "Marie Curie discovered ...", "X is best known for"; "Why is X important / remembered".
_FAME_AFTER = re.compile(
    r"\s+(?:discovered|invented|proved|formulated|theori[sz]ed|pioneered|"
    r"(?:is|was)\s+(?:best\s+|most\s+|widely\s+)?(?:known|famous|remembered|credited))\b",
    re.IGNORECASE,
)
_WHY_BEFORE = re.compile(r"\bwhy\s+(?:is|was)\s+$", re.IGNORECASE)
_NOTABLE_AFTER = re.compile(r"\s+(?:important|famous|remembered|significant|considered|called)\b", re.IGNORECASE)


def public_figure(text: str, start: int, end: int) -> bool:
    """Whether the name text[start:end] is framed as a public figure's: an eponym, a discovery or work asked about,
    "who was X", "X is best known for", "why is X important"."""
    before, after = text[max(0, start - 40) : start], text[end : end + 80]
    return bool(
        _EPONYM.match(after)
        or (_DID_BEFORE.search(before) and _FEAT_AFTER.match(after))
        or _WHO_WAS_BEFORE.search(before)
        or _FAME_AFTER.match(after)
        or (_WHY_BEFORE.search(before) and _NOTABLE_AFTER.match(after))
    )


# What puts a person at a street: living, moving, staying there, a delivery, a possessive home ("my address"); or
# someone's details filled in ("fill out the form with the information of X": a name the head typed as a street).
_PERSONAL = re.compile(
    r"\b(?:li(?:ve|ves|ved|ving)|mov(?:e|ed|ing)\s+to|stay(?:s|ed|ing)?\s+(?:at|on)|home|house|apartment|flat|"
    r"address|ship|shipp(?:ed|ing)|deliver\w*|send|sent|mail|post|pick\s+(?:me|us|him|her|them)\s+up|meet\w*|"
    r"form|information|details|contact|my|our)\b",
    re.IGNORECASE,
)
_ASK = re.compile(r"(?:describe|explain|summari[sz]e|discuss|tell\s+me\s+about)\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?\n]")


def public_place(text: str, start: int, end: int) -> bool:
    """Whether the address text[start:end] is a place asked about rather than where a person is: it holds no number
    (no house, unit or postcode), it stands in a question or an ask ("Describe ..."), and nothing in the text puts a
    person there ("I live on", "send it to", "my address")."""
    if any(c.isdigit() for c in text[start:end]) or _PERSONAL.search(text):
        return False
    opening = max((m.end() for m in _SENTENCE_END.finditer(text, 0, start)), default=0)
    closing = _SENTENCE_END.search(text, end)
    question = closing is not None and closing.group() == "?"
    return question or bool(_ASK.match(text[opening:start].lstrip()))


# Products and court cases named after people: "can I take Sudafed with Wellbutrin", "How do I clean my Louis Vuitton
# bag?", "Hadley v. Baxendale". The head reads a drug or a brand as it reads a first name; health, shop and legal
# operators' pii_policy refuses PERSON, so each such question left the large model and its cache (trials 17-19).
# Framings, not name lists: a name someone doses, takes or switches between is a medication; a name followed by a
# product noun is a brand; a name in a caption "X v. Y" or "In re X" is a party to a reported case.
_CONDITION = (
    r"(?:headaches?|migraines?|pain|cold|flu|cough|fever|allerg\w+|anxiety|depression|sleep|insomnia|acne|nausea|"
    r"heartburn|reflux|cramps|infections?|diabetes|blood\s+pressure|cholesterol|weight\s+loss|adhd|asthma)"
)
# Right after the name: "Zoloft side effects", "50 mg", "Humira pens", "is Keppra safe while breastfeeding".
_MED_AFTER = re.compile(
    r"\s+(?:\d+(?:\.\d+)?\s*(?:mg|mcg|ml)\b(?!\s+of\b)|(?:side[- ]effects?|withdrawal|overdose|dosage|doses?|dosing|"
    r"interactions?|interacts?|tablets?|pills?|capsules?|pens|injections?)\b|"
    r"(?:is\s+)?safe\s+(?:to\s+take|(?:while|during|when|in)\s+(?:pregnan|breastfeed|nursing)|for\s+(?:kids|"
    r"children|toddlers|babies|an?\s+\d)))",
    re.IGNORECASE,
)
# Asked what it does to a body: "Can Crestor cause muscle pain?", "Does Seroquel make you gain weight?"; "Did Sarah
# cause the accident" is not such a question.
_ASKED_BEFORE = re.compile(r"\b(?:can|could|does|do|will|would|might|may)\s+$", re.IGNORECASE)
_EFFECT_AFTER = re.compile(
    rf"\s+(?:cause|give\s+you|make\s+you)\s+(?:\w+\s+)?(?:{_CONDITION}|weight|gain|muscle|drowsiness|drowsy|"
    r"sleepy|tired|dizz\w+|nausea\w*|insomnia|hair\s+loss|fatigue|diarrh\w+|constipation|rash|bloating)\b",
    re.IGNORECASE,
)
_INTERACT_BEFORE = re.compile(r"\binteract(?:s|ing|ion)?\s+(?:with|between)\s+$", re.IGNORECASE)
# Right before it: "5 mg of", "a dose of", "prescribed (me)", "how much", "while on", "drink alcohol on".
_DOSE_BEFORE = re.compile(
    r"(?:\b\d+(?:\.\d+)?\s*(?:mg|mcg|ml|milligrams?)\s+(?:of\s+)?|\b(?:mg|mcg|milligrams?)\s+of\s+|\b(?:doses?|dosage|overdos\w*|refill|tablets?|"
    r"pills?|capsules?)\s+of\s+|\bprescribed\s+(?:me\s+|him\s+|her\s+|them\s+|us\s+)?|"
    r"\bwhile\s+on\s+|\b(?:drink|drinking|alcohol)\s+on\s+)(?:my\s+|the\s+|some\s+)?$",
    re.IGNORECASE,
)
# Taking it, and how: "take X while pregnant / on an empty stomach / before bed / for a migraine", "take X with Y" or
# "X and Y together" with nothing after Y (not "take Olivia with Noah to the park"); "Is it safe to take X?".
_TAKE_BEFORE = re.compile(
    r"\b(?:take|takes|taking|took|mix|mixing|combine|combining|give\s+(?:my\s+\w+|him|her|them))\s+$", re.IGNORECASE
)
_CLAUSE_END = r"(?:\s*(?:[?!.,;]|$)|\s+(?:together|at\s+the\s+same\s+time|safely|on\s+the\s+same\s+day)\b)"
_TAKE_AFTER = re.compile(
    r"(?:\s+(?:(?:while|during|when)\s+(?:pregnan|breastfeed|nursing|trying\s+to\s+conceive)|together|"
    r"at\s+the\s+same\s+time|on\s+an\s+empty\s+stomach|with\s+(?:food|alcohol|coffee|milk|grapefruit)|"
    r"(?:before|after)\s+(?:bed|sleep|eating|meals?|a\s+meal|surgery|drinking)|every\s+(?:day|\d+\s+hours)|daily|"
    rf"twice|long[- ]term|for\s+(?:a\s+|an\s+|my\s+|her\s+|his\s+)?(?:\w+\s+)?{_CONDITION})\b|"
    r"\s+(?:with|and|or|plus)\s+(?!(?:Me|Us|Him|Her|Them|You|My|Mom|Mum|Dad|Grandma|Grandpa|Nana|Papa|Mama)\b)"
    rf"(?-i:[A-Z])[\w-]*(?:\s+(?-i:[A-Z])[\w-]*)?{_CLAUSE_END})",
    re.IGNORECASE,
)
_SAFE_TO_TAKE = re.compile(r"\b(?:safe|okay|ok|fine|bad|dangerous)\s+to\s+(?:take|mix|combine)\s+$", re.IGNORECASE)
# "How much Mucinex can I take", "How much X is too much": not "How much Sarah earns".
_HOW_MUCH_BEFORE = re.compile(r"\bhow\s+(?:much|many|often)\s+$", re.IGNORECASE)
_HOW_MUCH_AFTER = re.compile(
    r"\s+(?:(?:can|should|do|does|is|to)\s+(?:\w+\s+){0,2}(?:take|give|use|too\s+much|safe)|(?:per|a)\s+day)\b",
    re.IGNORECASE,
)
# "switch(ing) from X to Y": both.
_SWITCH_BEFORE = re.compile(r"\bswitch(?:ed|ing)?\s+(?:\w+\s+)?from\s+$", re.IGNORECASE)
_SWITCH_AFTER = re.compile(r"\s+to\s+(?!(?:Mr|Mrs|Ms|Miss|Dr|Prof)\b)[A-Z]")
_TITLE_BEFORE = re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Dr|Prof)\.?\s+$")
_SWITCHED_TO = re.compile(
    r"\bswitch(?:ed|ing)?\s+(?:\w+\s+)?from\s+(?-i:[A-Z])[\w-]*(?:\s+(?-i:[A-Z])[\w-]*)?\s+to\s+$", re.IGNORECASE
)
# A name joined to a medication ("Plavix and Xarelto interaction", "Can I take Advil and Claritin together?").
_LINK = r"\s+(?:and|with|or|plus|&)\s+"
_NEXT = re.compile(rf"{_LINK}([A-Z][\w-]*(?:\s+[A-Z][\w-]*)?)")
_PREVIOUS = re.compile(rf"([A-Z][\w-]*(?:\s+[A-Z][\w-]*)?){_LINK}$")


def _medication(text: str, start: int, end: int) -> bool:
    """Whether the words text[start:end] are framed as a medication: dosed, taken, prescribed, switched between; not
    after a title ("switch from Ms. Delgado to Mr. Chen")."""
    before, after = text[max(0, start - 40) : start], text[end : end + 80]
    if _TITLE_BEFORE.search(before):
        return False
    return bool(
        _MED_AFTER.match(after)
        or _DOSE_BEFORE.search(before)
        or _INTERACT_BEFORE.search(before)
        or (_ASKED_BEFORE.search(before) and _EFFECT_AFTER.match(after))
        or (_SAFE_TO_TAKE.search(before) and re.match(r"\s*(?:[?.!]|$)", after))
        or (_HOW_MUCH_BEFORE.search(before) and _HOW_MUCH_AFTER.match(after))
        or (_TAKE_BEFORE.search(before) and _TAKE_AFTER.match(after))
        or (_SWITCH_BEFORE.search(before) and _SWITCH_AFTER.match(after))
        or _SWITCHED_TO.search(text[max(0, start - 80) : start])
    )


def _beside_medication(text: str, start: int, end: int) -> bool:
    """Whether the name is joined by "and"/"with"/"or" to a medication after it, or to one before it while standing
    at a clause's end itself."""
    following = _NEXT.match(text, end)
    if following is not None and _medication(text, following.start(1), following.end(1)):
        return True
    if not (re.match(_CLAUSE_END, text[end : end + 40], re.IGNORECASE) or _MED_AFTER.match(text[end : end + 80])):
        return False
    before = text[max(0, start - 60) : start]
    previous = _PREVIOUS.search(before)
    return previous is not None and _medication(text, start - len(before) + previous.start(1),
                                                start - len(before) + previous.end(1))


# A brand: the name, up to three capitalised words of a product line ("Tom Ford Tobacco Vanille perfume") or two
# lowercase descriptive words ("Manolo Blahnik bridal shoe"), then a product noun. A name that receives something is
# a person's, whatever follows ("I bought Megan shoes", "gave Tom 5 mg"), but where one buys it is a shop's. A
# possessive is a person's ("Jessica's bag") unless it is a designer's collection ("Marc Jacobs' new collection", not
# "Ryan's collection of watches").
_PRODUCT = (
    r"(?:bags?|handbags?|purses?|totes?|clutch|crossbody|backpacks?|wallets?|luggage|suitcases?|shoes?|sneakers|"
    r"trainers|boots|heels|pumps|sandals|loafers|flats|slippers|jeans|dress(?:es)?|shirts?|polos?|blouses?|sweaters?|"
    r"hoodies?|jackets?|coats?|suits?|scarf|scarves|belts?|underwear|bras?|swimsuits?|sunglasses|eyeglasses|frames|"
    r"watch(?:es)?|jewel(?:le)?ry|necklaces?|bracelets?|earrings|perfumes?|fragrances?|colognes?|eau\s+de\s+\w+|"
    r"foundation|concealer|powder|lipsticks?|mascara|eyeliner|blush|bronzer|primer|serum|cleanser|toner|"
    r"moisturi[sz]er|cream|lotion|sunscreen|shampoo|conditioner|soap|body\s+wash|setting\s+spray|makeup|skincare|"
    r"bedding|sheets|towels|cookware|outlets?|stores?|boutiques?|website|size\s+(?:chart|guide)|"
    r"return\s+policy|discount|coupons?|promo\s+code|on\s+sale)"
)
# Descriptive words are not function words or verbs ("Ask Nora which shoes", "Does Nora like perfume", "Nora wearing
# heels"): no -s, -ed or -ing ending, none of the verbs said of what a person owns.
_NOT_DESCRIPTIVE = (
    r"(?:which|what|whose|his|her|hers|their|my|your|our|its|a|an|the|some|any|no|that|this|these|those|to|for|and|"
    r"or|at|in|on|with|new|old|like|love|hate|want|need|buy|get|wear|have|own|prefer|use|make|sell|keep|lose|find|"
    r"[a-z]+(?:s|ed|ing))"
)
_PRODUCT_AFTER = re.compile(
    rf"(?:\s+(?:de|la|von|van|der|du|di|del|[A-Z][\w-]*)){{0,3}}?(?:\s+(?!{_NOT_DESCRIPTIVE}\b)[a-z]+){{0,2}}"
    rf"\s+{_PRODUCT}\b"
)
_RECEIVES = re.compile(
    r"\b(?:buy|bought|get|got|give|gave|send|sent|bring|brought|make|made|order(?:ed)?|find|found|show(?:ed)?|"
    r"lend|lent|lending|pick(?:ed)?\s+out)\s+$",
    re.IGNORECASE,
)
_COLLECTION_AFTER = re.compile(
    r"(?:\s+(?:de|la|von|van|der|du|di|del|[A-Z][\w-]*)){0,3}?(?:'s|’s|'|’)\s+"
    r"(?:(?:new|latest|spring|summer|fall|autumn|winter|resort|couture|runway|\d{4})\s+)*"
    r"(?:collections?|runway\s+shows?|fashion\s+shows?|lookbook)\b(?!\s+of\b)",
    re.IGNORECASE,
)
_WHERE_TO_GET = re.compile(r"\bwhere\b[^.?!]*\s$", re.IGNORECASE)  # "Where can I buy X polos?" asks for a shop
# What is asked of a shop: "Does X run small?", "Does X offer free shipping?", "Does X ship internationally?".
_SHOP_AFTER = re.compile(
    r"\s+(?:(?:runs?|fits?)\s+(?:small|large|big|narrow|wide|true\s+to\s+size)|ships?\s+(?:internationally|overseas|"
    r"worldwide)|(?:offers?|has|have)\s+(?:free\s+)?(?:shipping|returns|an?\s+(?:student\s+)?discount|an?\s+warranty))\b",
    re.IGNORECASE,
)
_COUNTERFEIT_BEFORE = re.compile(r"\b(?:fake|counterfeit|knock-?off|replica|pre-?owned)\s+$", re.IGNORECASE)

# A case caption: "Palsgraf v. Long Island Railroad", "Terry v. Ohio", "In re Gault"; "vs" or "v" without its dot only
# in a legal text ("Priya vs. Marco" in chess is two people). Not one's own case ("My small claims case is X v. Y").
_CAPTION = re.compile(
    r"(?:\bIn\s+re\s+|\b(?:[A-Z][\w.'’&-]*\s+){0,4}?[A-Z][\w.'’&-]*\s+(?P<v>v\.|vs\.?|v\b)\s+)"
    r"(?:[A-Z][\w.'’&-]*|of|the|and|for|de|&)(?:\s+(?:[A-Z][\w.'’&-]*|of|the|and|for|de|&))*"
)
_LEGAL = re.compile(
    r"\b(?:court|case|hold|held|holding|rul(?:e|ed|ing)|precedent|decision|decided|opinion|appeal|supreme|plaintiff|"
    r"defendant|doctrine|tort|contracts?|law|legal|overrul\w*|overturn\w*|cit(?:e|ed|ation)|brief|jurisdiction|"
    r"statute|constitution\w*|judge|justice|dissent|liability|damages|negligence|reasoning|standard)\b",
    re.IGNORECASE,
)
_OWN_CASE = re.compile(
    r"\b(?:my|our)\s+(?:\w+\s+){0,2}(?:case|lawsuit|suit|claim|hearing|trial|lawyer|attorney)\b|\bI(?:'m|\s+am)?\s+(?:su(?:e|ed|ing)|"
    r"fil(?:e|ed|ing))\b|\bsued\s+(?:me|us)\b",
    re.IGNORECASE,
)


def _case_party(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] lies in a reported case's caption and the text is not about the asker's own case."""
    if _OWN_CASE.search(text):
        return False
    return any(
        m.start() < end and start < m.end() and (m.group("v") in (None, "v.") or _LEGAL.search(text))
        for m in _CAPTION.finditer(text)
    )


_POSSESSIVE = re.compile(r"(?:'s|’s|'|’)(?!\w)")


def product_or_case(text: str, start: int, end: int) -> bool:
    """Whether the name text[start:end] is framed as a medication ("take X while pregnant", "mg of X", "X side
    effects", "switch from X to Y", "X and Y together"), a brand ("my X bag", "X's new collection") or a party to a
    reported case ("X v. Y", "In re X"). A possessive is a person's but for a designer's collection: "the dose of
    Sarah's medicine", "Jessica's bag"."""
    before = text[max(0, start - 40) : start]
    if _POSSESSIVE.match(text, end):
        return bool(_COLLECTION_AFTER.match(text, end))
    if _RECEIVES.search(before) and not _WHERE_TO_GET.search(before):
        return False
    return bool(
        _medication(text, start, end)
        or _beside_medication(text, start, end)
        or _PRODUCT_AFTER.match(text, end)
        or _COLLECTION_AFTER.match(text, end)
        or _SHOP_AFTER.match(text, end)
        or _COUNTERFEIT_BEFORE.search(before)
        or _case_party(text, start, end)
    )
