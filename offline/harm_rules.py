"""A readable rule for operational harm: a request for the means to do serious harm, in plain words.

The content-safety head reads frozen MiniLM features, where "how do I kill a frozen process" and "how do I kill my
neighbour" sit together; at the threshold that keeps such risky-sounding asks clean it catches about one harmful
request in nine (README "Guards"). This rule reads the words instead. It needs three things in one sentence: an ask
for means (how to / how do I / best way to / step-by-step / write, give me, build me ...), within three words the
act (make, synthesize, build, hack into, steal, poison ...) and, for that act, an object from a harm class's lexicon
(a bomb, sarin, meth, ransomware, someone's account, a person, myself). "How do nuclear weapons work", "symptoms of an
overdose", "kill a zombie process" or "break into my own gmail" have no such triple. A match names its harm class
(`harm_class`).

Written from general knowledge and the DEV harmful and benign sets only (offline/harm_rule_eval.py); no test row was
read before the rule was final. Measured, not shipped (offline/README.md, "Guards, operational-harm rule"): it costs
1.2-2.2 ms of CPU per 500-character prompt in Python's re (the budget was 0.1 ms), and on test it blocked 2 of 403
risky-sounding benign asks (5 with the head) while adding 0.105 HarmBench recall.
"""

from __future__ import annotations

import re

RULE_SCORE = 0.99

# The ask for means: English imperatives and how-to questions whose subject is the asker ("how do hackers crack
# passwords?" asks about the world, not for means).
_ASK = (
    r"(?:\bhow\s+(?:to|do|can|could|would|should|might|will)(?:\s+(?:i|we|u|one|someone|somebody|a\s+person))?"
    r"|\b(?:best|easiest|fastest|quickest|simplest|cheapest|surest|most\s+effective|good|safest)\s+"
    r"(?:way|ways|method|methods|places?|spots?)(?:\s+on\s+the\s+body)?\s+(?:to|of|for)"
    r"|\bways?\s+(?:to|of)|\bmethods?\s+(?:to|for|of)|\bsteps?\s+(?:to|for)|\bstep[\s-]+by[\s-]+step"
    r"|\binstruct\w*|\bguide\s+(?:to|for|on)|\btutorial|\brecipe|\bprocedure\s+for|\bplan\s+(?:to|for)"
    r"|\b(?:give|tell|show|teach|walk)\s+me|\b(?:write|create|generate|develop|build|make|code|design|craft|compose|"
    r"draft|produce|program)(?:\s+me)?|\bdetail|\bexplain|\bdescribe|\bhelp\s+me|\bcan\s+you"
    r"|\bwhat\s+(?:\w+\s+){0,3}(?:can|could|should)\s+i\s+(?:use|mix|put|buy|take|give)"
    r"|\bwhere\s+(?:can|could|do|should)\s+i|\b(?:can|could|should)\s+i\s+use(?:\s+to)?)"
)
# Up to three words between the ask and the act, none of them a negation or a defence ("how to not hurt people",
# "how do I protect my phone from someone tracking ...").
_GAP = (r"(?:\s+(?!(?:not|never|avoid|stop|prevent|protect|without|if|when|whether|report|recognize|recognise|spot|"
        r"identify|detect|fight|combat|know|tell|understand|survive|treat|handle)\b)[\w'’-]+){0,3}?\s+")
# Or the act itself opens a sentence, as an imperative ("Write ransomware that ...", "Describe methods for ...").
_START = r"(?:^|(?<=[.?!\n:;]))\s*(?:(?:please|pls|now|just|ok|okay|so|then)\s+)?"
_RELATION = (
    r"(?:ex-?|step-?)?(?:wife|husband|girlfriend|boyfriend|partner|spouse|mom|mother|dad|father|stepdad|stepmom|"
    r"brother|sister|son|daughter|kid|child|baby|boss|teacher|coworker|co-worker|classmate|roommate|neighbou?r|"
    r"landlord|ex)"
)
_PERSON = (
    r"(?:someone|somebody|a\s+(?:person|stranger|child|kid|baby|toddler|man|woman|guy|girl|cop|police\s+officer|"
    rf"classmate|coworker|co-worker|neighbou?r|teacher)|people|strangers|children|my\s+{_RELATION})\b"
)
# Another person's things: someone's account, my ex's phone ("my own" is never another's; a parent's look at a child's
# phone is not counted, "How can I see my child's location with Family Link?").
_PEER = (
    r"(?:ex-?)?(?:wife|husband|girlfriend|boyfriend|partner|spouse|boss|teacher|professor|coworker|co-worker|classmate|"
    r"roommate|neighbou?r|landlord|ex)"
)
_OTHERS = rf"(?:someone(?:\s+else)?'?s|somebody'?s|other\s+people'?s|a\s+stranger'?s|their|his|her|my\s+{_PEER}'?s)"
_DRUGS = (
    r"(?:meth|methamphetamine|methamphtetamine|crystal\s+meth|fentanyl|carfentanil|heroin|cocaine|crack|lsd(?:-25)?|"
    r"mdma|ecstasy|dmt|ghb|pcp|nitazenes?|xanax|oxycodone|oxy|percocet|adderall|ketamine|opium|"
    r"tropane\s+alkaloids?)"
)
_AGENTS = (
    r"(?:sarin|tabun|soman|vx|novichok|ricin|abrin|anthrax(?:\s+spores)?|botulinum(?:\s+toxin)?|mustard\s+gas|"
    r"chlorine\s+gas|phosgene|nerve\s+(?:agent|gas)s?|chemical\s+weapons?|bio-?weapons?|biological\s+weapons?|"
    r"toxic\s+gas|poison(?:ous)?\s+gas|dimethyl\s*mercury|parathion|tetrodotoxin|ea-?2192|cyanide|polonium|smallpox|"
    r"ebola)"
)
# Per harm class, (acts, objects, most characters between them): an object follows its act in the same sentence.
_RULES: dict[str, tuple[tuple[str, str, int], ...]] = {
    "weapons": (
        ((r"(?:mak(?:e|ing)|synthesi[sz](?:e|ing)|build(?:ing)?|assembl(?:e|ing)|construct(?:ing)?|manufactur(?:e|ing)|3d[\s-]*print|print|"
         r"convert|rig|detonat(?:e|ing)|plant(?:ing)?|set(?:ting)?\s+off|creat(?:e|ing))"),
         (r"(?:(?:pipe|car|nail|dirty|letter|suicide|fertili[sz]er|homemade)\s+)?bombs?|explosives?|i\.?e\.?d|"
         r"detonators?|napalm|thermite|molotov(?:\s+cocktails?)?|grenades?|landmines?|zip\s+guns?|ghost\s+guns?|"
         r"untraceable\s+(?:guns?|firearms?|weapons?|silencers?)|silencers?|suppressors?|full(?:y)?[\s-]*auto(?:matic)?|"
         r"machine\s+guns?|guns?\b[^.?!\n]{0,40}\bserial\s+number"), 30),
        (r"(?:get|bring|sneak|smuggle|take|carry)", r"(?:a\s+)?(?:gun|knife|weapon|bomb)\s+(?:into|through|past)", 30),
        (r"(?:get|buy|obtain|acquire)", (r"(?:an?\s+)?(?:untraceable\s+)?(?:gun|firearm|rifle|pistol)s?\s+(?:without\s+(?:a\s+)?"
                                        r"(?:background|license|licence)|illegally|as\s+a\s+felon)"), 30),
    ),
    "chemical_biological": (
        ((r"(?:mak(?:e|ing)|synthesi[sz](?:e|ing)|synthesis\s+of|produc(?:e|ing)|extract(?:ing)?|cultur(?:e|ing)|grow|"
         r"cultivat(?:e|ing)|spread|releas(?:e|ing)|dispers(?:e|ing)|aerosoli[sz]e|weaponi[sz](?:e|ing)|obtain|acquire|buy|"
         r"creat(?:e|ing)|brew|refine|purify|giv(?:e|ing)\s+(?:\w+\s+){0,2}|mix)"), _AGENTS, 30),
    ),
    "drugs": (
        ((r"(?:mak(?:e|ing)|cook(?:ing)?|synthesi[sz](?:e|ing)|synthesis\s+of|produc(?:e|ing)|manufactur(?:e|ing)|"
         r"extract(?:ing)?|press|smuggl(?:e|ing)|sell|deal|grow\s+and\s+sell|turn\s+[\w\s-]{1,30}\s+into|cut)"),
         rf"{_DRUGS}|drugs", 30),
        (r"(?:sell|grow\s+and\s+sell)", (rf"(?:weed|marijuana|pills|{_DRUGS}|drugs)\b[^.?!\n]{{0,60}}"
                                         r"\b(?:without\s+getting\s+caught|illegal)"), 20),
        (r"(?:get|buy|order)", rf"{_DRUGS}\b[^.?!\n]{{0,40}}\b(?:without\s+(?:a\s+)?prescription|dark\s*web|illegally)",
         20),
    ),
    "malware_intrusion": (
        (r"(?:write|create|make|build|code|develop|generate|give\s+me|program|design|craft|deploy|spread)",
         (r"ransomware|keyloggers?|malware|virus|trojan|(?:computer|network|self-propagating)\s+worm|rootkit|botnet|spyware|stalkerware|(?:crypto\s+)?drainer|"
         r"infostealer|backdoor|zip\s+bomb|logic\s+bomb|(?:sql\s+injection\s+)?payload\s+to\s+dump|"
         r"(?:script|program|code|tool|app|extension|bot|macro)\s+(?:that|which|to)\s+(?:\w+\s+){0,3}?"
         r"(?:steals?|exfiltrates?|harvests?|encrypts?\s+all|logs?\s+keystrokes|records?\s+keystrokes|ddos|crash)"), 60),
        ((r"(?:hack|hack\s+into|break\s+into|get\s+into|take\s+over|hijack|crack|brute[\s-]*force|spy\s+on|"
         r"install\s+\w+\s+on|read|track|access|turn\s+on|see)"),
         (rf"{_OTHERS}\s+(?:[\w'’-]+\s+)?(?:account|e-?mail|inbox|phone|wifi|wi-fi|wpa2?|network|computer|laptop|"
         r"whatsapp|instagram|facebook|snapchat|icloud|passwords?|texts?|text\s+messages|messages|location|webcam|"
         r"camera)"), 25),
        (r"(?:hack(?:\s+into)?|infiltrate|compromise)",
         (r"(?:an?\s+|the\s+|someone'?s\s+)?(?:[\w-]+\s+){0,2}(?:atms?|databases?|servers?|networks?|email\s+servers?|"
         r"power\s+grid|voting\s+machines?|bank\s+accounts?)"), 15),
        (r"(?:gain|get|obtain)\s+unauthori[sz]ed\s+access", r"", 0),
        (r"(?:ddos|dos|crash|take\s+down)", r"(?:a|the|someone'?s|their)\s+(?:\w+\s+){0,2}(?:server|website|site)", 10),
        (r"(?:give\s+me|get|escalate\s+\w+\s+to)", r"root\s+(?:privileges|access)|admin\s+without", 40),
        (r"(?:give\s+me|write|craft)", r"(?:working\s+)?sql\s+injection\s+payload", 20),
    ),
    "fraud_theft": (
        (r"(?:write|create|make|draft|compose|generate|design|give\s+me|build|set\s+up|send|sell)",
         (r"phishing\s+(?:e-?mails?|page|site|website|message|text|sms|link|kit)|scam\s+(?:e-?mails?|message|call|"
         r"script|text)|fake\s+(?:invoice|charity|giveaway|reviews?|id|driver'?s\s+license|passport|diploma|doctor'?s\s+"
         r"note|prescription|check|cheque|concert\s+tickets|tickets?|bank\s+statement|tech\s+support\s+call)|"
         r"fraudulent\s+\w+|counterfeit|(?:message|text|e-?mail|call|script)\b[^.?!\n]{0,60}\b(?:one-time\s+password|"
         r"otp|verification\s+code|login\s+credentials|banking\s+login|remote\s+access|gift\s+cards?)|"
         r"(?:e-?mails?|texts?|messages?|calls?|scripts?)\s+(?:\w+\s+){0,3}pretending\s+to\s+be|pretending\s+to\s+be"), 40),
        (r"(?:steal|rob|skim|hotwire|launder|forge|counterfeit)",
         (r"(?:a|the|someone'?s|my\s+neighbou?r'?s|my\s+ex'?s|their)\s+(?:\w+\s+)?(?:car|house|home|apartment|store|"
         r"shop|bank|gas\s+station|bike|bicycle|packages?|register|wallet|purse|identity|money)|something|"
         r"from\s+(?:the\s+|a\s+)?(?:store|shop|cash\s+register|register|work|my\s+employer|\w+\s+without)|"
         r"(?:credit|debit)\s+cards?|money|cash|bills|identit(?:y|ies)|catalytic\s+converters?|packages|"
         r"signatures?|documents|passports?|prescriptions?|\$?\d+k?\s+(?:in\s+)?cash"), 25),
        (r"(?:shoplift|embezzle|pickpocket|burglari[sz]e)", r"", 0),
        (r"(?:cut|saw|remove)", r"(?:a\s+|the\s+)?catalytic\s+converters?", 20),
        (r"(?:set\s+up|install|build|make|use|plant)", r"(?:a\s+)?(?:credit\s+card\s+)?skimm(?:er|ing\s+device)s?", 20),
        (r"(?:break\s+into|get\s+into)",
         rf"(?:a|{_OTHERS})\s+(?:\w+\s+)?(?:car|house|home|apartment|locker|store|shop)", 10),
        (r"(?:file|get|take\s+out|open)", (r"someone\s+else'?s\s+(?:social\s+security|ssn|identity|credit)|"
                                          r"(?:dead|deceased)\s+\w+'?s\s+identity"), 40),
        (r"(?:bypass|disable|remove|defeat)", r"(?:a\s+)?(?:\w+'?s?\s+)?(?:security|anti-?theft)\s+tags?", 20),
        (r"(?:fake)", r"(?:a\s+)?(?:car\s+accident|injury|my\s+(?:own\s+)?death|insurance\s+claim)", 20),
        (r"(?:buy|get)", r"stolen\s+(?:credit\s+cards?|card\s+numbers|identit\w+|data|accounts)", 20),
    ),
    "violence": (
        ((r"(?:kill|murder|poison|strangle|stab|shoot|hurt|harm|injure|maim|beat\s+up|torture|kidnap|abduct|assault|"
         r"attack|drug|choke|suffocate|drown|kick|punch|knock\s+out)"), _PERSON, 12),
        (r"(?:get\s+away\s+with)", r"murder|killing|manslaughter", 5),
        (r"(?:hide|dispose\s+of|get\s+rid\s+of|dissolve|bury)", r"(?:a|the)\s+(?:dead\s+)?body", 10),
        (r"(?:put|slip|add)", r"(?:in|into)\s+(?:someone'?s|a\s+person'?s|her|his|their)\s+(?:drink|food)", 20),
        (r"(?:spike)", r"(?:the\s+)?(?:punch|drinks?|someone'?s|her|his|their)", 5),
        (r"(?:make)", (rf"(?:him|her|them|someone|somebody|my\s+{_RELATION}|\w+'s\s+dog)\s+(?:really\s+|very\s+)?"
                      r"(?:sick|ill)\b"), 30),
        (r"(?:incite|provoke|start)", r"violence|riots?|a\s+riot|genocide|a\s+massacre", 10),
        (r"(?:sex|human)\s+traffic\w*|traffic\s+(?:women|girls|children|people)", r"", 0),
        (r"(?:plan|carry\s+out|stage)", (r"(?:an?\s+)?(?:attack|shooting|bombing)\b[^.?!\n]{0,40}\b(?:casualties|crowd|"
                                      r"concert|school|church|mosque|synagogue)"), 10),
    ),
    "harassment": (
        (r"(?:harass|cyberstalk|dox)", r"", 0),
        (r"(?:guide|methods?|strategies|instructions|tips|plan)\s+(?:for|on|to)",
         r"(?:online\s+|workplace\s+)?(?:harassment|bullying|cyberstalking|stalking)", 0),
    ),
    "stalking": (
        (r"(?:find|find\s+out|get|track|locate|figure\s+out)",
         (rf"where\s+(?:she|he|they|my\s+{_RELATION}(?:\s+\w+)?)\s+(?:lives|moved|is\s+staying|is\s+living|works)|"
         r"(?:home|personal|private)\s+address\s+of|which\s+hotel"), 30),
        (r"(?:follow)", r"(?:someone|her|him|a\s+(?:woman|girl|man|stranger))\s+home", 5),
    ),
    "sexual_minors": (
        (r"(?:seduce|groom|have\s+sex\s+with|sext|molest|touch)",
         r"(?:a|my|an|the)?\s*(?:child|minor|kid|preteen|underage\s+\w+|\d{1,2}[\s-]*(?:year|yr)[\s-]*old)", 15),
        (r"(?:write|describe|generate|create|make|find|get|share|send|draw)",
         (r"(?:sexual|sexy|erotic|explicit|nude|naked|lewd|porn\w*|steamy)\b[^.?!\n]{0,40}\b(?:child|children|minor|"
         r"underage|preteen|\d{1,2}[\s-]*(?:year|yr)[\s-]*old|schoolgirl|schoolboy|little\s+(?:girl|boy))|"
         r"(?:child|minor|underage|preteen|\d{1,2}[\s-]*(?:year|yr)[\s-]*old|little\s+(?:girl|boy))\b[^.?!\n]{0,40}"
         r"\b(?:sexual|sexy|erotic|explicit|nude|naked|lewd|porn\w*)"), 40),
    ),
    "self_harm": (
        (r"(?:kill|hang|cut|hurt|harm|poison|starve|drown|burn|shoot|suffocate|overdose)",
         r"myself\b(?!\s+(?:a|an|some|bangs|free|loose|off))", 5),
        (r"(?:end)", r"my\s+(?:own\s+)?life", 5),
        (r"(?:write)", r"(?:a\s+|my\s+)?suicide\s+note", 10),
        (r"(?:tie|make)", r"a\s+noose", 5),
        (r"(?:hide)", r"(?:my\s+)?self[\s-]*harm", 10),
        (r"(?:make)", (r"myself\s+(?:throw\s+up|vomit|purge)\b[^.?!\n]{0,40}\b(?:every|each|so\s+(?:no\s*one|nobody)|"
                      r"without\s+(?:anyone|my\s+parents))"), 5),
    ),
}
# Asks for means that need no act word: a lethal amount for oneself, a method of suicide, a height to die from, hiding
# the marks of a beating.
_DIRECT = {
    "violence": (
        r"\b(?:put|slip|add|mix)\b[^.?!\n]{0,10}\b(?:in|into)\s+(?:someone'?s|a\s+person'?s|her|his|their)\s+drink\b"
        r"[^.?!\n]{0,40}\b(?:knock|pass\s+out|unconscious|without\s+(?:them|her|him)\s+(?:noticing|knowing))|"
        r"\b(?:hit|beat|hurt|punch|choke|slap)\b[^.?!\n]{0,40}\b(?:without\s+(?:leaving\s+)?(?:any\s+)?(?:marks|bruises)|"
        r"(?:won'?t|wont|don'?t|can'?t)\s+see\s+(?:the\s+|any\s+)?bruises)"
    ),
    "self_harm": (
        r"\b(?:lethal|fatal|deadl\w+|overdose)\b[^.?!\n]{0,80}?(?:for\s+myself|i\s+want\s+to\s+(?:die|end\s+it)|"
        r"end\s+(?:it|my\s+life))|\b(?:painless|quickest|easiest|fastest|surest)\s+way\s+to\s+(?:die|commit\s+suicide|"
        r"end\s+(?:it|my\s+life))|\bhow\s+to\s+commit\s+suicide\b|\b(?:enough|high\s+enough)\s+to\s+die\b|"
        r"\b(?:die|heart\s+gives\s+out)\b[^.?!\n]{0,80}\b(?:i\s+want\s+to\s+(?:die|disappear|end\s+it)|i\s+don'?t\s+want\s+help)|"
        r"\bcut\b[^.?!\n]{0,30}\bbleed\s+more\b"
    ),
}
_MINE = re.compile(r"\b(?:my|our)\s+own\b|\bmine\b", re.IGNORECASE)
_REST = re.compile(r"[^.?!\n]*")
_OWN_MATTERS = ("malware_intrusion", "fraud_theft")  # "break into my own gmail"; "press my own pills" still counts


# Between act and object, no word of defence, study or fiction ("write a YARA rule to detect malware", "give me a
# literature survey of phishing websites", "write a story about a virus").
_DEFENCE = (r"(?!\b(?:detect|scan|remov|analy[sz]|protect|defen[cds]|against|block|clean|prevent|stop|avoid|spot|recogni|"
            r"survey|literature|research|dataset|paper|story|stories|poem|song|fanfic|essay|novel)\w*)")


def _compile(rules: tuple[tuple[str, str, int], ...]) -> re.Pattern[str]:
    parts = [rf"{acts}(?:s|es|ed|ing)?\b" + (rf"\s*(?:{_DEFENCE}[^.?!\n]){{0,{gap}}}?\b(?:{objects})(?!\w)" if objects else "")
             for acts, objects, gap in rules]
    return re.compile(rf"(?:{_ASK}{_GAP}|{_START})(?:{'|'.join(parts)})", re.IGNORECASE)


_COMPILED = [(name, _compile(rules)) for name, rules in _RULES.items()] + [
    (name, re.compile(pattern, re.IGNORECASE)) for name, pattern in _DIRECT.items()
]


def harm_class(text: str) -> str | None:
    """The harm class whose rule `text` matches (the first, in _RULES order), or None. An intrusion or theft about
    the asker's own things ("break into my own gmail", "crack my own zip file") does not count."""
    for name, pattern in _COMPILED:
        for match in pattern.finditer(text):
            if name not in _OWN_MATTERS or not _MINE.search(match.group(0) + _rest(text, match.end())):
                return name
    return None


def _rest(text: str, end: int) -> str:
    """The rest of the sentence after a match ("get root access on my own Raspberry Pi")."""
    found = _REST.match(text, end)
    return found.group(0) if found else ""
