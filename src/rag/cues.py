"""Typed cues for the answer stage: what kind of answer a question expects (an amount of money, a
number, a date, a country) and whether a quoted text holds one. The pipeline uses them after the
reader (README, How it works 6, "typed cues"):

- when the reader found no confident short answer to an amount, number or date question, it abstains
  unless the quoted sentences hold an answer of that kind and the reader is fairly sure
  (:data:`TYPED_MIN_ANSWERABLE`): an answer to "How many ...?" that quotes a sentence without a number
  is not an answer;
- when the first quoted sentence holds exactly one candidate of the kind asked for, that candidate is
  the short answer (:func:`typed_answer`);
- an amount, number or date question about a country that the cited passages (text, section path,
  title) never name is abstained on (:func:`place_gap`): "How many officers are deployed in Moldova?"
  is not answered by the Western Balkans' figure;
- any question about a year that the quoted sentences never mention is abstained on (:func:`year_gap`):
  "What did the 2020 Pact propose ...?" is not answered by a passage about the 2023 Pact;
- a question about what is not so, answered by sentences that say nothing in the negative, is
  abstained on (:func:`negation_gap`): "What do beroids not have?" is not answered by what they have.

Plain regular expressions, English only. A question of another kind (who, what, which, why) expects
nothing here and is left to the reader.
"""

from __future__ import annotations

import re
from typing import Sequence

from .text import COUNTRY_NAMES, PLACES, collapse_ws

#: The answerable probability (rag.reader) an amount, number or date question needs, per strictness,
#: when the reader found no confident short answer in the passages. Chosen on the reader's held-out data (the
#: four held-out SQuAD articles and the held-out third of eval/qa.jsonl, README, How it works 6, "typed cues"); like the
#: reader's own thresholds it belongs to the shipped model and is re-chosen when the reader is retrained.
TYPED_MIN_ANSWERABLE = {"lenient": 0.3, "balanced": 0.4, "strict": 0.5}

MONTH = r"(?:January|February|March|April|May|June|July|August|September|October|November|December)"
_MONTH_WORDS = frozenset(m.lower() for m in MONTH[3:-1].split("|"))  # "january", ..., "december"
_NUMBER_WORDS = (r"(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|forty|"
                 r"fifty|sixty|hundreds?|thousands?|millions?|billions?|dozens?|half|double|twice|triple|several|"
                 r"few|many|single|third|quarter|infinite|infinitely|nothing|none)")
# "How much funding ...?", "How much did it cost ...?", "What is the budget of ...?"
_MONEY_QUESTION = re.compile(r"\bhow much (?:\w+ ){0,2}?(?:money|funding|budget)\b|"
                             r"\bhow much (?:\w+ ){0,10}?(?:cost|costs|pay|paid|spend|spent|worth|invest|invested|"
                             r"allocate|allocated|earmark|earmarked)\b|"
                             r"\bwhat (?:is|was|are|were|will be) (?:the|its|their|\w+['’]s?) (?:total |annual |overall )?(?:\w+ )?"
                             r"(?:budget|cost|price|funding|value)\b", re.I)
# "Which country ...?", "With which Balkan partner ...?", "Which Member State ...?" (one, not "which countries")
_COUNTRY_QUESTION = re.compile(r"\b(?:which|what) (?:\w+ )?(?:country|member state|nation|neighbou?r|partner)\b", re.I)
_NUMBER_QUESTION = re.compile(r"\bhow (?:many|much|long|old|far|large|big|high|tall)\b|"
                              r"\bwhat (?:percentage|percent|proportion|number|amount|sum)\b", re.I)
# "When ...?", "Since when ...?" (not "What happens when ...?", not "When rock folds ..., what ...?"), or
# "what/which year"
_DATE_QUESTION = re.compile(r"^\W*(?:(?:and|but|so|since|until|till|by|from) )?when\b(?!.*\b(?:what|who|whom|which|"
                            r"where|why|how)\b)|\b(?:what|which) (?:year|date|month|day|century|decade)\b", re.I)
# "On what date ...?": a year or a month alone does not answer it
_DAY_QUESTION = re.compile(r"\b(?:what|which) (?:date|day)\b", re.I)
# "In what year ...?" wants a year ("1685", "2nd century BCE" for antiquity), "Which century ...?" a century,
# "Which decade ...?" a decade: not "18th century", "1643" or a name
_PERIOD_QUESTION = re.compile(r"\b(?:what|which) (year|century|decade)\b", re.I)
_PERIOD = {
    "year": re.compile(r"(?<![\d.,])\d{3,4}(?!\d|[.,]\d)|\b(?:BC|AD|BCE|CE|B\.C|A\.D)\b"),
    "century": re.compile(r"\bcentur(?:y|ies)\b|\b\d{1,2}00s\b|\b\d{1,2}(?:st|nd|rd|th)\b", re.I),
    "decade": re.compile(r"\b\d{0,3}0s\b|\b(?:twenties|thirties|forties|fifties|sixties|seventies|eighties|nineties)\b", re.I),
}
_DIGITS = r"\d(?:[\d,.]*\d)?"  # "73 185", "6.4", "2023" (not the full stop after it)
_NUMBER = re.compile(rf"{_DIGITS}|\b{_NUMBER_WORDS}\b", re.I)
_DATE = re.compile(rf"{_DIGITS}|\b{MONTH}\b|\b(?:Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec)\b|"
                   r"\b(?:century|centuries|decade|spring|summer|autumn|winter|today|yesterday|recently|ago|era|age|"
                   r"period|reign|war|during|after|before|since|until|time|beginning|end|"
                   r"(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)days?|first|second|third|fourth|fifth|sixth|seventh|"
                   r"eighth|ninth|tenth|eleventh|twelfth|\w+teenth|twentieth|twenty-first)\b", re.I)
#: (type, pattern) of the answer candidates a sentence holds, most specific first (the cloze questions of
#: rag.reader_cloze and the typed short answer of rag.pipeline)
_SCALE = r"(?:\s(?:million|billion|trillion|thousand|hundred))?"
CANDIDATE_TYPES: tuple[tuple[str, re.Pattern], ...] = (
    ("date", re.compile(rf"\b(?:\d{{1,2}} {MONTH}(?:,? \d{{4}})?|{MONTH} \d{{1,2}}(?:, \d{{4}})?|{MONTH} \d{{4}})\b")),
    ("money", re.compile(rf"(?:(?:EUR|USD|GBP|US\$|\$|€|£)\s?\d[\d,.]*{_SCALE}|\b\d[\d,.]*{_SCALE} (?:euros?|dollars?|pounds?))")),
    ("percent", re.compile(r"\b\d[\d,.]*\s?(?:%|per ?cent\b)")),
    ("year", re.compile(r"\b(?:1[5-9]\d{2}|20\d{2})s?\b")),
    ("number", re.compile(rf"\b\d[\d,.]*{_SCALE}\b")),
    ("name", re.compile(r"(?<=[a-z,;:(] )(?:[A-Z][\w'-]+(?: (?:of|de|the|and|von|van|la) [A-Z][\w'-]+| [A-Z][\w'-]+)*)")),
)
_COUNTRY = re.compile(r"\b(?:" + "|".join(re.escape(c) for c in sorted(COUNTRY_NAMES, key=len, reverse=True)) + r")\b")
#: the typed short answer's candidates: these, with bare months and quarters ("in July", "Q1 2024")
#: before the years, numbers grouped by spaces ("73 185") before the other numbers, and countries
#: (rag.text's list) before the other names
SHORT_TYPES = (CANDIDATE_TYPES[:3] + (("month", re.compile(rf"\bQ[1-4] \d{{4}}\b|\b{MONTH}\b")),) + CANDIDATE_TYPES[3:4]
               + (("number", re.compile(r"\b\d{1,3}(?: \d{3})+\b")),) + CANDIDATE_TYPES[4:5] + (("country", _COUNTRY),)
               + CANDIDATE_TYPES[5:])
#: the candidate types that answer a money, number, date or country question
ANSWERS = {"money": frozenset({"money"}), "number": frozenset({"money", "percent", "number"}),
           "date": frozenset({"date", "month", "year"}), "country": frozenset({"country"})}
# an amount of money with its currency: "EUR 6.4 million", "£304m", "$57,000", "105 million euros"
_CURRENCY = re.compile(rf"{CANDIDATE_TYPES[1][1].pattern}|(?:EUR|USD|GBP|US\$|\$|€|£)\s?\d[\d,.]*\s?(?:m|bn)\b")
# what answers an amount question: those, or a number with a scale ("105 million" from the fund)
_MONEY = re.compile(rf"{_CURRENCY.pattern}|\b\d[\d,.]*\s?(?:million|billion|trillion|bn)\b")
_CANDIDATE = {"money": _MONEY, "number": _NUMBER, "date": _DATE, "country": _COUNTRY}
# what answers "On what date ...?": a date ("16 July 2023") or a weekday ("on Thursdays")
_DAY_OR_DATE = re.compile(rf"{CANDIDATE_TYPES[0][1].pattern}|\b(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)days?\b|"
                          rf"\bI {MONTH}\b")  # "I December": OCR's 1
#: how a kind is named in an abstention message
_NAMED = {"money": "amount", "number": "number", "date": "date"}


def expected_type(question: str) -> str | None:
    """"money" ("How much funding ...?", "What is the budget of ...?"), "number" ("How many ...?", "What
    percentage ...?"), "date" ("When ...?", "In what year ...?"), "country" ("Which Member State ...?")
    or None. A question that asks two ("How many ... in what year?") counts as the first of these."""
    if _MONEY_QUESTION.search(question):
        return "money"
    if _NUMBER_QUESTION.search(question):
        return "number"
    if _DATE_QUESTION.search(question):
        return "date"
    if _COUNTRY_QUESTION.search(question):
        return "country"
    return None


# "How many interceptions ...?" asks for a count, which an amount of money or a date is not ("How many
# euros ...?" asks for an amount)
_COUNT_QUESTION = re.compile(r"\bhow many\b(?! (?:\w+ )?(?:euros?|dollars?|pounds?|EUR|USD)\b)", re.I)


def _counts(text: str, question: str, keep_years: bool) -> list[str]:
    """The numbers in ``text`` that could count something ("How many ...?"): not the question's own, not
    part of an amount of money (with its currency) or a date, nor (unless ``keep_years``) a year."""
    spans = [m.span() for rx in (_CURRENCY, CANDIDATE_TYPES[0][1]) + (() if keep_years else (CANDIDATE_TYPES[3][1],))
             for m in rx.finditer(text)]
    asked = {m.group().lower() for m in _NUMBER.finditer(question)}
    return [m.group() for m in _NUMBER.finditer(text)
            if m.group().lower() not in asked and not any(a <= m.start() < b for a, b in spans)]


def holds_type(kind: str, text: str, question: str = "") -> bool:
    """Does ``text`` hold a candidate answer of ``kind`` (see :func:`expected_type`) that is not already
    in the question? ("How many were lodged in 2023?" is not answered by a sentence whose only number is 2023.)
    Dates are read generously (a month, a year, "during the war", "after"): an answer like "after the
    Edict of Nantes" is a date answer too, but "On what date ...?" wants a day ("16 July", "Thursdays"),
    "In what year ...?" a year, "Which century ...?" a century and "Which decade ...?" a decade.
    The number of an amount of money, of a date or a year is no answer to "How many ...?"."""
    if kind == "number" and _COUNT_QUESTION.search(question):
        return bool(_counts(text, question, keep_years=False))
    rx = _CANDIDATE[kind]
    if kind == "date" and (period := _PERIOD_QUESTION.search(question)):
        rx = _PERIOD[period.group(1).lower()]
    elif kind == "date" and _DAY_QUESTION.search(question):
        rx = _DAY_OR_DATE
    asked = {m.group().lower() for m in rx.finditer(question)}
    return any(m.group().lower() not in asked for m in rx.finditer(text))


# "By what percentage ...?", "What share of ...?": a quantity, which a span without a number is not
_QUANTITY_QUESTION = re.compile(r"\bwhat (?:percentage|percent|proportion|share|fraction|number|amount|sum)\b|"
                                r"\bby how much\b", re.I)
# "Who ...?", "Which country / city / organisation ...?": a name, which a bare number is not
_NAME_QUESTION = re.compile(r"^\W*who\b|\b(?:which|what) (?:\w+ )?(?:country|countries|member states?|nations?|"
                            r"partners?|city|cities|town|person|people|organi[sz]ations?|company|companies|"
                            r"agency|agencies|group)\b", re.I)
_BARE_NUMBER = re.compile(r"[\d,.%\s]+|\d[\d,.]*\s?(?:hundred|thousand|million|billion)")
# places and bodies a proper name answers for ("Which city ...?", "Which agency ...?")
_PLACES_AND_BODIES = r"city|cities|towns?|country|countries|member states?|nations?|company|companies|agency|agencies"
# "Which city ...?", "Which two countries' ...?", "Which agency ...?": a proper name, which holds a capital
# letter (not "Which group ...?": "cnidarians"; not "Who ...?": "physicians")
_PROPER_NAME_QUESTION = re.compile(rf"\b(?:which|what) (?:\w+ )?(?:{_PLACES_AND_BODIES})\b", re.I)


def wrong_kind(question: str, span: str) -> bool:
    """Is the reader's ``span`` the wrong kind of answer for ``question``: no amount for "How much funding
    ...?", no number but those of amounts and dates for "How many ...?" ("EUR 110 million" or "A
    roundtable" for "How many work visas ...?"; a number word such as "several" or a year-like number
    such as "2000" kilometres may count), no number at all for "By what percentage ...?" ("Sfax"), a
    bare number for "Who ...?" or "Which Member States ...?" ("9"), no capital letter for "Which city /
    country / agency ...?" ("progress made"), a country or a region alone for "When ...?" or "In what year
    ...?" ("Pakistan")."""
    if _QUANTITY_QUESTION.search(question) and not _NUMBER.search(span):
        return True
    kind = expected_type(question)
    if kind in (None, "country") and _NAME_QUESTION.search(question) and _BARE_NUMBER.fullmatch(span.strip()):
        return True
    if kind in (None, "country") and _PROPER_NAME_QUESTION.search(question) and not re.search(r"[A-Z]", span):
        return True  # "third" for "Which two countries' ...?", "progress made" for "In which city ...?"
    if kind == "date" and _DAY_QUESTION.search(question) and not _DAY_OR_DATE.search(span):
        return True
    if _DATE_QUESTION.search(question) and re.sub(r"^the\s+", "", span.strip(" .,;:()").lower()) in PLACES:
        return True  # "Pakistan" for "When is the Liaison Officer expected to take up the post in Islamabad?"
    if kind == "money" or (kind == "date" and _PERIOD_QUESTION.search(question)):
        return not holds_type(kind, span, question)
    return kind == "number" and bool(_COUNT_QUESTION.search(question)) and not _counts(span, question, keep_years=True)


# "How many interceptions at sea did ...?" -> "interceptions": up to three words after "how many", to a verb,
# a preposition or the question mark ("How many European border guards were ..." -> "European border guards")
_COUNTED = re.compile(r"\bhow many ((?:[\w\-]+ ){0,2}?[\w\-]+?)(?: (?:did|do|does|were|was|are|is|have|has|had|will|"
                      r"would|can|could|in|of|to|on|at|for|from|with|by|under|per)\b|\?|$)", re.I)
# units a sentence counts without naming them ("three meetings" answers "How many times ...?")
_UNNAMED_UNITS = {"times", "people", "persons"}


def counted_words(question: str) -> str:
    """What a "How many ...?" question counts, as it says it ("interceptions", "European border guards"; a
    main verb may come along: "people live"), or "" (not a count question, or one with a unit that a
    sentence need not name, such as "times" or "people")."""
    m = _COUNTED.search(question) if _COUNT_QUESTION.search(question) else None
    if not m or any(w.lower() in _UNNAMED_UNITS for w in m.group(1).split()):
        return ""
    return m.group(1)


# number words that count nothing exactly: "several strands", "a number of", "a single Centre"
_VAGUE = re.compile(r"several|few|many|single|nothing|none|dozens|hundreds|thousands|millions|billions", re.I)


def typed_gap(question: str, answer_text: str, answerable: float, strictness: str) -> str:
    """Why an answer without a confident short answer does not answer an amount, number or date question
    ("" when it may stand): the quoted ``answer_text`` (citation markers removed) holds no answer of that
    kind (for "How many ...?", no count but vague ones such as "several" or "a single"), or the reader's
    ``answerable`` probability is under :data:`TYPED_MIN_ANSWERABLE` for ``strictness``, or the quoted
    sentences name nothing a "How many ...?" question counts (:func:`counted_words`: "How many
    interceptions ...?" quoting "Five Search and Rescue vessels have been handed over")."""
    kind = expected_type(question)
    if kind not in _NAMED:  # None, or a country question: those are not abstained on (not measured to pay)
        return ""
    if not holds_type(kind, answer_text, question) or (
            kind == "number" and _COUNT_QUESTION.search(question)
            and all(_VAGUE.fullmatch(c) for c in _counts(answer_text, question, keep_years=False))):
        return f"no passage gives the {_NAMED[kind]} asked for"
    if answerable < TYPED_MIN_ANSWERABLE[strictness]:
        return f"no {_NAMED[kind]} in the passages clearly answers it"
    from .lexical import tokenize

    counted = counted_words(question) if kind == "number" else ""
    stems = set(tokenize(counted))
    if stems and not stems & set(tokenize(answer_text)):  # none of its words: it counts something else
        return f"the sentences found count no {counted}"
    return ""


#: a country's other names and irregular adjectives (regular ones are derived: Libya -> Libyan,
#: Morocco -> Moroccan, Egypt -> Egyptian); names of one country are one group. Not "American": it
#: names continents too ("Latin American countries")
_OTHER_NAMES = (
    ("Türkiye", "Turkey", "Turkish", "TR"), ("Bosnia and Herzegovina", "BiH", "Bosnian"),
    ("Côte d'Ivoire", "Cote d'Ivoire", "Ivory Coast", "Ivorian"), ("Cape Verde", "Cabo Verde", "Cape Verdean"),
    ("Gambia", "The Gambia", "Gambian"), ("United Kingdom", "UK", "Britain", "British"),
    ("United States", "US", "USA"), ("Netherlands", "Holland", "Dutch"), ("France", "French"),
    ("Germany", "German"), ("Greece", "Greek"), ("Spain", "Spanish"), ("Italy", "Italian"),
    ("Switzerland", "Swiss"), ("Sweden", "Swedish"), ("Denmark", "Danish"), ("Finland", "Finnish"),
    ("Poland", "Polish"), ("Ireland", "Irish"), ("Portugal", "Portuguese"), ("Belgium", "Belgian"),
    ("Norway", "Norwegian"), ("Lebanon", "Lebanese"), ("Senegal", "Senegalese"), ("Sudan", "Sudanese"),
    ("China", "Chinese"), ("Japan", "Japanese"), ("Iraq", "Iraqi"), ("Pakistan", "Pakistani"),
    ("Bangladesh", "Bangladeshi"), ("Afghanistan", "Afghan"), ("Montenegro", "Montenegrin"),
    ("Kosovo", "Kosovar"), ("North Macedonia", "Macedonian"), ("Niger", "Nigerien"), ("Czechia", "Czech"),
    ("Slovakia", "Slovak"), ("Croatia", "Croatian", "Croat"), ("Philippines", "Filipino"),
)


def _country_forms() -> dict[str, frozenset[str]]:
    """Each name or adjective -> the countries it names."""
    names = {c: {c} for c in COUNTRY_NAMES}
    for c in COUNTRY_NAMES:
        if c.endswith("a"):
            names[c].add(c + "n")  # Libyan, Tunisian, Albanian
        elif c.endswith("o"):
            names[c].add(c[:-1] + "an")  # Moroccan
        elif c[-1] not in "aeiouy":
            names[c].add(c + "ian")  # Egyptian, Jordanian
    for group in _OTHER_NAMES:
        for c in group:
            if c in names:
                names[c].update(group)
    out: dict[str, set[str]] = {}
    for c, forms in names.items():
        for f in forms:
            out.setdefault(f, set()).add(c)
    return {f: frozenset(cs) for f, cs in out.items()}


_FORMS = _country_forms()
_FORM = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(f) for f in sorted(_FORMS, key=len, reverse=True)) + r")(?!\w)")


def countries_named(text: str) -> set[str]:
    """The countries (rag.text's list) ``text`` names, by a name or an adjective ("Libyan" names Libya;
    "Turkey", "Türkiye" and "TR" name both of its names)."""
    return {c for f in _FORM.findall(text) for c in _FORMS[f]}


def place_gap(question: str, evidence: str) -> str:
    """Why an amount, number or date question about a country is not answered by passages (``evidence``:
    their text, section paths and titles) that never name that country ("" when they do, or when the
    question names none): "How many officers are deployed in Moldova?" quoting the Western Balkans."""
    kind = expected_type(question)
    if kind not in _NAMED:
        return ""
    asked = countries_named(question)
    if not asked:
        return ""
    said = countries_named(evidence)
    missing = sorted(asked - said)  # a country's names share their forms: "Turkey" and "Türkiye" go together
    return f"no passage about {' or '.join(missing)} gives the {_NAMED[kind]} asked for" if missing else ""


# a year: 1000-2099, not part of a longer number ("1,500", "10000"), not a decade ("the 1990s")
_YEAR = re.compile(r"(?<![\d.,])(?:1\d{3}|20\d{2})(?![\d]|[.,]\d|'?s\b)")


def year_gap(question: str, evidence: str, where: str = "the passages found") -> str:
    """Why ``evidence`` (cited passages: their text, section paths and titles; or the quoted sentences
    with those section paths and titles) that never mentions a year the question names does not answer it
    ("" when it mentions every one, or the question names none): "What did the 2020 Pact propose ...?"
    quoting a passage about today's Pact. Any kind of question: SQuAD 2.0's unanswerable questions often
    swap a year (measured in the README, How it works 6). ``where`` names the evidence in the reason."""
    said = set(_YEAR.findall(evidence))
    missing = [y for y in dict.fromkeys(_YEAR.findall(question)) if y not in said]
    return f"{where} never mention {' or '.join(missing)}" if missing else ""


# a name with its number: "Phase I", "Louis XIII", "Article 5"
_NUMBERED = re.compile(r"\b([A-Z][a-z]+) (X{0,3}(?:IX|IV|V?I{0,3})|\d{1,2})\b(?![.,]\d)")


def numbered_gap(question: str, evidence: str, where: str = "the passages found") -> str:
    """Why ``evidence`` that mentions a name the question numbers only with other numbers does not answer
    it ("How much was Phase I worth?" quoting "Phase III (EUR 40 million)"); "" otherwise."""
    for m in _NUMBERED.finditer(question):
        name, number = m.groups()
        if number and not re.search(rf"\b{name} {number}\b", evidence) \
                and re.search(rf"\b{name} (?:[IVX]+|\d{{1,2}})\b(?![.,]\d)", evidence):
            return f"{where} never mention {name} {number}"
    return ""


# an ordinal and what it numbers: "the first High Level Dialogue"
_ORDINAL = r"(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth)"


def ordinal_gap(question: str, evidence: str, where: str = "the passages found") -> str:
    """Why ``evidence`` that numbers what the question numbers only with other ordinals does not answer it
    ("When did the first High Level Dialogue take place?" quoting "A second High Level Dialogue ... took
    place on 23 November"); "" otherwise."""
    for m in re.finditer(rf"\b((?i:{_ORDINAL})) (\w+)((?: [A-Z][\w\-]*)*)", question):
        ordinal, what, rest = m.groups()
        if not re.search(rf"\b{ordinal} {what}\b", evidence, re.I) \
                and re.search(rf"\b{_ORDINAL} {what}\b", evidence, re.I):
            return f"{where} never mention the {ordinal.lower()} {what}{rest}"
    return ""


# a month a question names ("in July 2023"; not "May", which may be the verb)
_MONTH_NAMED = re.compile(r"\b(January|February|March|April|June|July|August|September|October|November|December)\b")


def month_gap(question: str, evidence: str, where: str = "the passages found") -> str:
    """Why ``evidence`` (cited passages: text, section paths and titles) that never mentions a month the
    question names does not answer it ("How many were lodged in October 2023?" quoting passages about
    November); "" otherwise. A month may be abbreviated ("Sept", "Jul") or in capitals."""
    missing = [m for m in dict.fromkeys(_MONTH_NAMED.findall(question))
               if not re.search(rf"\b{m[:3]}", evidence, re.I)]
    return f"{where} never mention {' or '.join(missing)}" if missing else ""


# a question about what is not so ("What do beroids not have ...?"); "whether or not" asks nothing negative
_NEGATED = re.compile(r"\b(?:not|never|no longer|cannot|neither|nor)\b|n't\b", re.I)
_NOT_NEGATED = re.compile(r"\b(?:whether or not|may or may not|or not)\b", re.I)
# what says something is not so: a negation, a lack, a refusal, an exception, a failure, a ban
_NEGATIVE = re.compile(r"\b(?:not|never|no|none|nor|neither|nothing|nobody|without|cannot|unable|unlike|unknown|"
                       r"unwilling|unsuccessful\w*|lack\w*|refus\w*|except|impossible|instead|rather|fail\w*|"
                       r"den(?:y|ied|ies)|absen\w*|oppos\w*|against|reject\w*|avoid\w*|prevent\w*|ban\w*|forb\w*|"
                       r"prohibit\w*|only|exclud\w*|outside|less|few|little)\b|n't\b|\bnon-", re.I)
_WHY = re.compile(r"^\W*why\b", re.I)


def negation_gap(question: str, evidence: str, where: str = "the passages found") -> str:
    """Why ``evidence`` that says nothing in the negative does not answer a question about what is not so
    ("What do coastal beroids not have ...?" quoting a sentence about what they have; "" otherwise).
    SQuAD 2.0's unanswerable questions often insert a negation (README, How it works 6, "typed cues"). Not "why"
    questions, whose answers are reasons stated positively. ``where`` names the evidence in the reason."""
    q = _NOT_NEGATED.sub(" ", question)
    if _WHY.match(q) or not _NEGATED.search(q) or _NEGATIVE.search(evidence):
        return ""
    return f"the question asks what is not so; {where} say nothing of the kind"


# A date question about a legal step ("When was the agreement with Serbia signed?", "... enter into force?")
# and what says that step happened: being negotiated, signed and in force are different facts
_STEPS = (
    ("was signed", re.compile(r"\bsign(?:ed|s|ing)?\b", re.I), re.compile(r"\bsign(?:ed|s|ing|ature|atures|atory)?\b", re.I)),
    ("entered into force", re.compile(r"\b(?:enter(?:ed|s)?|come|came|comes|be|been|is|was) into force\b|\btake effect\b|"
                            r"\btook effect\b", re.I), re.compile(r"\binto force\b|\bin force\b|\beffect\b", re.I)),
    ("was ratified", re.compile(r"\bratifi(?:ed|es)\b|\bratify\b", re.I), re.compile(r"\bratif", re.I)),
)


def step_gap(question: str, evidence: str, where: str = "the passages found") -> str:
    """Why ``evidence`` does not date the legal step a date question asks about when it never mentions
    that step: "When was the agreement with Serbia signed?" quoting "latest round of negotiations took
    place on 7 November", or "When did it enter into force?" quoting "Signed on 15 September 2023"; ""
    otherwise (and for other questions)."""
    if expected_type(question) != "date":
        return ""
    for step, asked, said in _STEPS:
        if asked.search(question) and not said.search(evidence):
            return f"nothing in {where} says when it {step}"
    return ""


# A question about the past ("When did the Council adopt the Pact?", "What was decided at ...?"), and a
# sentence that speaks only of what is to come ("... by the end of this year will allow ...")
_PAST_QUESTION = re.compile(r"\b(?:did|was|were|had)\b", re.I)
_NOT_PAST = re.compile(r"\b(?:will|would|is|are|does|do|can|has|have)\b", re.I)
_FUTURE = re.compile(r"(?<!the )(?<!a )(?<!own )(?<!political )\b(?:will|shall)\b(?! of\b)|\bto be followed\b|"
                     r"\b(?:expected|planned|scheduled|foreseen) (?:to|for|in|by)\b|\bupcoming\b|\btbc\b", re.I)
_PAST = re.compile(r"\b(?:was|were|had|did|took|began|led|made|held|met|gave|went|came|became)\b|"
                   r"\b(?<!be )(?<!been )\w{3,}ed\b", re.I)


def tense_gap(question: str, sentence: str, where: str = "the sentence found") -> str:
    """Why a ``sentence`` that speaks only of what is to come (a future, "to be followed", "expected to",
    "tbc"; no past tense) does not answer a question about the past ("When did the Council formally adopt
    the Pact?" quoting "Agreement ... by the end of this year will allow ..."); "" otherwise."""
    if not _PAST_QUESTION.search(question) or _NOT_PAST.search(question):
        return ""
    if _FUTURE.search(sentence) and not _PAST.search(sentence):
        return f"{where} speaks of what is still to come"
    return ""


def step_date(question: str, sentence: str, start: int, end: int) -> tuple[int, int]:
    """For a date question about a legal step, the date in ``sentence`` that step's clause gives, when the
    span ``sentence[start:end]`` is another step's or runs over several steps' dates: "Signed on 24 October
    2022 and entered into force on 1 April 2023" answers "When was it signed?" with 24 October 2022, not
    1 April 2023 nor the whole clause. A date's clause runs from the end of the date before it (or the
    sentence's start) to the date. Otherwise unchanged."""
    steps = [said for _, asked, said in _STEPS if asked.search(question)]
    if not steps or expected_type(question) != "date":
        return start, end
    said = steps[0]
    dates, last = [], 0
    for m in CANDIDATE_TYPES[0][1].finditer(sentence):
        dates.append((m.start(), m.end(), bool(said.search(sentence[last:m.start()]))))
        last = m.end()
    inside = [ok for a, b, ok in dates if start < b and a < end]  # the dates the span touches
    if inside == [True]:
        return start, end
    right = [(a, b) for a, b, ok in dates if ok]
    return right[0] if len(right) == 1 else (start, end)


# "What is the name of the EU Return Coordinator?", "In which city ...?", "Which three Member States ...?":
# questions a proper name answers
_PROPER_QUESTION = re.compile(rf"\bwhat (?:is|was|are|were) the names? of\b|\b(?:which|what) (?:\w+ )?(?:{_PLACES_AND_BODIES}|"
                              r"organi[sz]ations?|president|minister|commissioner|university)\b", re.I)
# a capitalised word inside a sentence (not its first word)
_INNER_CAPITAL = re.compile(r"(?<=[\w,;:()’'\"] )[A-Z][\w'’\-]*")


def name_gap(question: str, quoted: str, where: str = "the sentence found") -> str:
    """Why ``quoted`` sentences (rag.pipeline gives the first quoted one) do not answer a question a
    proper name answers when they hold no capitalised word (but their first words, months and the
    question's own words): "Which three Member States joined?" quoting "Three more Member States
    announced they were joining Talent Partnerships"; "" otherwise. Not amount, number or date
    questions, nor "Who ...?" (answered by "physicians" too)."""
    from .lexical import tokenize

    if not _PROPER_QUESTION.search(question) or expected_type(question) in _NAMED:
        return ""
    asked = set(tokenize(question))
    for m in _INNER_CAPITAL.finditer(quoted):
        words = tokenize(m.group())
        if m.group().lower() not in _MONTH_WORDS and words and words[0] not in asked:
            return ""
    return f"no name in {where} answers it"


# "Who is the president of Tunisia ...?", "What is the name of the EU Return Coordinator?", "Who chaired ...?":
# a question whose answer is a person's name (not "the president's plan", "the head office", "the partners of
# the head of ...")
_PERSON_QUESTION = re.compile(
    r"^\W*(?:(?:who (?:is|was|are|were)|what (?:is|was) the name of) (?:the|its|their) "
    r"(?:(?!(?:of|whose|which|that|who|for|in|on)\b)[\w'’\-]+ ){0,3}?"
    r"(?:president|prime minister|minister|coordinator|director|commissioner|head|chair(?:man|woman|person)?|leader|"
    r"king|queen|mayor|secretary|ambassador|ceo|founder|governor|emperor|pope|bishop)s?\b(?!['’]|[ ]+office)|"
    r"who (?:chaired|chairs|presided|presides)\b)", re.I)
# a person named with a title ("Prime Minister Orpo", "Commissioner Johansson", "Mr Smith")
_TITLED_NAME = re.compile(r"\b(?:Mr|Mrs|Ms|Dr|Sir|Dame|Lord|Lady|President|Vice-President|Prime Minister|Minister|"
                          r"Commissioner|Chancellor|Secretary|King|Queen|Pope|Governor|Mayor|Director|"
                          r"Chair(?:man|woman|person)?)\.?[ ]+([A-Z][\w'’\-]+)")


def person_gap(question: str, sentence: str) -> str:
    """Why an answer without a confident short answer (rag.pipeline asks only then) does not answer a
    question about who holds a post (``_PERSON_QUESTION``: "Who is the Italian prime minister behind ...?",
    "What is the name of the EU Return Coordinator?", "Who chaired ...?"): the answer is a name, the reader
    trusts none in the passages, and ``sentence`` (the first quoted one) names no one with a title ("Prime
    Minister Orpo") but whom the question names; "" otherwise."""
    if not _PERSON_QUESTION.search(question):
        return ""
    from .lexical import tokenize

    asked = set(tokenize(question))
    if any(_name_word(m.group(1)) and not set(tokenize(m.group(1))) <= asked for m in _TITLED_NAME.finditer(sentence)):
        return ""
    return "the reader found no name that answers it"


def evidence_gap(question: str, evidence: str, quoted: str | None = None) -> str:
    """Why the cited passages (``evidence``: text, section paths and titles) cannot answer ``question``
    whatever the reader found: a year the question names that they never mention, or that the quoted
    sentences never mention when ``quoted`` is given (those sentences with the cited passages' section
    paths and titles: "How many in 1598?" quoting a sentence about 1562, from a passage that mentions 1598
    elsewhere; :func:`year_gap`); or a month the question names that they never mention
    (:func:`month_gap`); or a country an amount, number or date question asks about that they
    never name (:func:`place_gap`); or a question about what is not so that they (or the quoted
    sentences) answer with nothing in the negative (:func:`negation_gap`); or a numbered name ("Phase I")
    they (or the quoted sentences) mention only with other numbers (:func:`numbered_gap`); or, in the
    quoted sentences, a "first High Level Dialogue" numbered otherwise (:func:`ordinal_gap`); without
    ``quoted`` (a generated answer's cited passages), a legal step a date question asks about that they
    never take (:func:`step_gap`). "" when none of these."""
    if quoted is None:
        return (year_gap(question, evidence) or numbered_gap(question, evidence) or month_gap(question, evidence)
                or place_gap(question, evidence) or negation_gap(question, evidence) or step_gap(question, evidence))
    return (year_gap(question, quoted, "the sentences found") or numbered_gap(question, quoted, "the sentences found")
            or ordinal_gap(question, quoted, "the sentences found")
            or month_gap(question, evidence) or place_gap(question, evidence)
            or negation_gap(question, quoted, "the sentences found"))


def typed_answer(kind: str, sentence: str, question: str) -> tuple[int, int] | None:
    """(start, end) in ``sentence`` of its one candidate answer of ``kind`` (see :func:`expected_type`)
    that the question does not already hold; None when there is none or more than one."""
    asked = collapse_ws(question).lower()
    wanted = ({"date"} if kind == "date" and _DAY_QUESTION.search(question) else
              {"number", "percent"} if kind == "number" and _COUNT_QUESTION.search(question) else ANSWERS[kind])
    found = [(a, b) for t, a, b in answer_candidates(sentence, SHORT_TYPES)
             if t in wanted and collapse_ws(sentence[a:b]).lower() not in asked]
    return found[0] if len(found) == 1 else None


def answer_candidates(sentence: str, types: Sequence[tuple[str, re.Pattern]] = CANDIDATE_TYPES) -> list[tuple[str, int, int]]:
    """(type, start, end) of the answer candidates in ``sentence`` (of ``types``), non-overlapping, the
    more specific type winning (a date's year is not also a year)."""
    taken: list[tuple[int, int]] = []
    out = []
    for kind, rx in types:
        for m in rx.finditer(sentence):
            s, e = m.start(), m.end()
            while e > s and sentence[e - 1] in ".,":
                e -= 1
            if e - s < 2 or any(s < b and a < e for a, b in taken):
                continue
            taken.append((s, e))
            out.append((kind, s, e))
    return out


# "Where ...?", "In which city ...?" and the names a sentence places things at ("in Cairo", "at the Cape of
# Good Hope")
_WHERE_QUESTION = re.compile(r"^\W*where\b|\b(?:in|at) (?:which|what) (?:city|town|place|region|location)\b", re.I)
_PLACE = re.compile(r"\b(?:in|at|near|from|to)\s+(?:the\s+)?([A-Z][\w'’\-]*(?:\s+(?:of\s+)?[A-Z][\w'’\-]*)*)")


def place_answer(question: str, sentence: str) -> tuple[int, int] | None:
    """(start, end) in ``sentence`` of the one place it puts something at ("in Cairo" for "Where was the
    roundtable held on 7 June?"), a name the question does not already hold, for a "Where ...?" question;
    None otherwise, or when the sentence names none or more than one."""
    from .lexical import tokenize

    if not _WHERE_QUESTION.search(question):
        return None
    asked = set(tokenize(question))
    found = []
    for m in _PLACE.finditer(sentence):
        words = m.group(1).split()
        if not _name_word(words[0]) or not _name_word(words[-1]) or set(tokenize(m.group(1))) <= asked:
            continue
        found.append(m.span(1))
    return found[0] if len(found) == 1 else None


# A short answer that cuts a proper name ("Butterfly Hill" of "Julia Butterfly Hill", "Nantes" of "Edict
# of Nantes") is completed to the whole name. Titles, months, number words and possessives are not part
# of a name here ("Prime Minister Orpo" stays "Orpo"), and an amount ("EUR 115 million") is no name.
_TITLES = frozenset("""king queen duke duchess prince princess count countess earl lord lady sir landgrave
president vice-president prime minister ministers commissioner commissioners archeologist archaeologist general
admiral pope saint st. dr. mr. mrs. ms. professor bishop emperor empress chancellor governor senator judge
justice""".split())
_NOT_NAME = _TITLES | _MONTH_WORDS | frozenset(
    """the a an in on at by for from it this that these those its his her their our as of and or but when while
    after before during with to into upon since under over one two three four five six seven eight nine ten
    eleven twelve hundred thousand million billion""".split())
_NAME_WORD = re.compile(r"[A-Z][\w'’.\-]*")
_ROMAN = re.compile(r"[IVX]+")
_TRAIL = ",.;:)!?\"'”’"


def _name_word(w: str) -> bool:
    return (bool(_NAME_WORD.fullmatch(w)) and w.lower() not in _NOT_NAME and not re.search(r"\d|['’]s?$", w))


def complete_name(text: str, start: int, end: int, lo: int, hi: int) -> tuple[int, int]:
    """``text[start:end]`` widened to the whole proper name it cuts, within ``text[lo:hi]`` (its
    sentence) and its line: adjacent capitalised words on either side, and "X of" before it ("Edict of
    Nantes"; not "Richard II of Normandy" from "Normandy", nor "Minister of Interior X" from "X"). A span
    that is not all name words ("EUR 115 million", "Prime Minister Orpo") is returned as it is."""
    words = text[start:end].split()
    if not words or "\n" in text[start:end] or not all(_name_word(w) or w == "of" for w in words) \
            or not (_name_word(words[0]) and _name_word(words[-1])):
        return start, end
    while m := re.match(r"[ ]+(\S+)", text[end:hi]):  # capitalised words after it
        w = m.group(1)
        bare = w.rstrip(_TRAIL)
        if not bare or not _name_word(bare):
            break
        end += m.start(1) + len(bare)
        if bare != w:  # "Julia Butterfly Hill," ends the name
            break
    while m := re.search(r"(?:(\S+)[ ]+(of)|(\S+))[ ]+$", text[lo:start]):  # capitalised words, or "X of", before it
        head = m.group(1) or m.group(3)
        if head != head.rstrip(_TRAIL) or not _name_word(head) or (m.group(2) and _ROMAN.fullmatch(head)):
            break
        before = text[lo:lo + m.start()].split()[-1:]
        if not before or (not m.group(2) and before == ["of"]):
            break  # not the sentence's first word ("Then Anne Frank"), nor "Interior" of "Minister of Interior X"
        start = lo + m.start()
    return start, end


# "Which two countries' arrangement ...?", "What two women ...?": a question that asks for two
_TWO = re.compile(r"\b(?:what|which|the) two\b", re.I)
#: at most this many further names join a short answer's list (:func:`list_name`)
SHORT_LIST_ITEMS = 12


def pair_name(question: str, text: str, start: int, end: int, lo: int, hi: int) -> tuple[int, int]:
    """For a question that asks for two (``_TWO``), a name span ``text[start:end]`` widened to the pair
    it is one half of, within ``text[lo:hi]`` (its sentence): "Albania" -> "Italy and Albania", "Puah" ->
    "Shiphrah and Puah" (each half a whole name, :func:`complete_name`). Otherwise unchanged."""
    span = text[start:end]
    if not _TWO.search(question) or " and " in span or "," in span or not span.split() \
            or not all(_name_word(w) for w in span.split()):
        return start, end
    if (m := re.search(r"(\S+) and $", text[lo:start])) and _name_word(m.group(1)):
        return complete_name(text, lo + m.start(1), lo + m.end(1), lo, hi)[0], end
    if (m := re.match(r" and (\S+?)[,.;:)]?(?:\s|$)", text[end:hi])) and _name_word(m.group(1)):
        return start, complete_name(text, end + m.start(1), end + m.end(1), lo, hi)[1]
    return start, end


# "Which countries ...?", "What Irish cities ...?": a question that asks for several of a kind (a list); the
# words between are adjectives ("Irish", "North African", "three"), not a verb or "of" ("What did the Member
# States agree?", "Which of the countries ...?")
_SEVERAL = re.compile(r"\b(?:which|what)\s+(?:(?!(?:is|are|was|were|did|do|does|has|have|had|will|would|can|could|"
                      r"should|of|the|a|an)\b)[\w\-]+\s+){0,3}?(?:countries|member states|states|cities|towns|"
                      r"nations|partners|regions|islands|companies|organi[sz]ations|agencies|universities|"
                      r"provinces|colonies)\b", re.I)
# one item of a list of names, on one line: capitalised words, with "of", "de", "von", ... or "d'Ivoire" inside
_PARTICLES = frozenset("of de da del di du von van der la le the".split())
_ITEM = (r"[A-Z][\w'’.\-]*(?:[ ]+(?:(?:of|de|da|del|di|du|von|van|der|la|le|the)[ ]+)?"
         r"(?:[A-Z][\w'’.\-]*|[dl]['’][A-Z][\w\-]*))*")
_BEFORE_ITEM = re.compile(rf"({_ITEM})(,[ ]+|,?[ ]+and[ ]+)$")
_AFTER_ITEM = re.compile(rf"(,[ ]+(?:and[ ]+)?|,?[ ]+and[ ]+)({_ITEM})")
# capitalised words that open a sentence or a clause without naming anything
_OPENERS = frozenset("""however meanwhile moreover furthermore therefore thus also still yet instead indeed
    nevertheless nonetheless overall recently currently today finally first firstly second secondly third
    additionally similarly likewise accordingly consequently hence besides otherwise then now here there
    since while although though unless once because""".split())


def _is_item(words: str) -> bool:
    """Is ``words`` one name of a list: name words (no title, month, number word or possessive; "The Gambia"
    and "Côte d'Ivoire" are names), with only particles such as "of" between them?"""
    ws = words.split()
    if ws[:1] == ["The"] and len(ws) > 1:
        ws = ws[1:]
    return bool(ws) and ws[0].lower() not in _OPENERS and all(
        _name_word(w) or w in _PARTICLES or re.fullmatch(r"[dl]['’][A-Z][\w\-]*", w) for w in ws) \
        and _name_word(ws[0])


def list_name(question: str, text: str, start: int, end: int, lo: int, hi: int) -> tuple[int, int]:
    """For a question that asks for several of a kind (``_SEVERAL``; not "Which two ...?": :func:`pair_name`),
    a name span ``text[start:end]`` that is part of a list of names ("A, B and C", on one line) widened to
    the whole list, within ``text[lo:hi]`` (its sentence): "Pakistan and Bangladesh" -> "Morocco, Tunisia,
    Egypt, Pakistan and Bangladesh" for "Which countries have Talent Partnerships?" (the part of a list
    would read as the whole), "Dublin" -> "Dublin, Cork, Youghal and Waterford". The list ends at the item
    after its "and"; a possessive's "'s" is left out ("... and Spain's partners" -> "... and Spain"). At
    most SHORT_LIST_ITEMS items are added (a longer list stays a sentence: rag.pipeline gives no short
    answer over 12 words). Otherwise unchanged."""
    if not _SEVERAL.search(question) or _TWO.search(question) \
            or not all(_is_item(x) for x in re.split(r",[ ]+(?:and[ ]+)?|[ ]+and[ ]+", text[start:end])):
        return start, end
    closed = bool(re.search(r"[ ]and[ ]", text[start:end]))  # "Pakistan and Bangladesh": the list's end
    for _ in range(SHORT_LIST_ITEMS):
        m = _BEFORE_ITEM.search(text[lo:start])
        # the item's last words that are a name ("In Italy, Greece and Spain": "Italy")
        words = list(re.finditer(r"\S+", m.group(1))) if m else []
        first = next((w for w in words if _is_item(m.group(1)[w.start():])), None)
        if first is None:
            break
        start = lo + m.start(1) + first.start()
        if first is not words[0]:  # the words before it are no name: the list starts here
            break
    for _ in range(SHORT_LIST_ITEMS):
        m = _AFTER_ITEM.match(text[end:hi]) if not closed else None
        item = re.sub(r"['’]s$", "", m.group(2).rstrip(_TRAIL)) if m else ""
        if not item or not _is_item(item):
            break
        end += m.start(2) + len(item)
        closed = "and" in m.group(1)
    return start, end


# A heading answers a question that names what it is about ("Eastern Mediterranean Action Plan October
# 2023" answers "When was the Eastern Mediterranean action plan adopted?"), compared as search terms
# (rag.lexical.tokenize: stop words dropped, words stemmed)


def heading_answer(kind: str, heading: str, question: str, only: bool = False) -> tuple[int, int] | None:
    """(start, end) in ``heading`` (a section title) of its one candidate answer of ``kind`` (see
    :func:`typed_answer`), when the question names what the heading is about: at least two of the
    heading's other words, and at least two thirds of them. With ``only``, the question must be about
    the heading's subject and nothing else: all of those words, and at most two words of its own ("When
    was the Eastern Mediterranean action plan adopted?", "... come out?"). None otherwise."""
    found = typed_answer(kind, heading, question)
    if found is None:
        return None
    from .lexical import tokenize

    rest = set(tokenize(heading[:found[0]] + " " + heading[found[1]:]))
    asked = set(tokenize(question))
    named = rest & asked
    if only:
        return found if len(named) >= 2 and named == rest and len(asked - rest) <= 2 else None
    return found if len(named) >= 2 and 3 * len(named) >= 2 * len(rest) else None
