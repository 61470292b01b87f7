"""Text functions and tables every stage shares: whitespace, the search form (OCR repair),
accent folding, month names and place names. Pure functions of strings; no stage logic.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from .errors import UnreadableFile

WS = re.compile(r"\s+")


def decode_text(raw: bytes) -> tuple[str, str]:
    """UTF-8 (with or without BOM); otherwise cp1252, then latin-1, with a notice. Binary data is refused."""
    if b"\x00" in raw[:8192]:
        raise UnreadableFile("looks like a binary file, not text")
    try:
        text = raw.decode("utf-8-sig")
        notice = ""
    except UnicodeDecodeError:
        try:
            text, notice = raw.decode("cp1252"), "not valid UTF-8; decoded as cp1252"
        except UnicodeDecodeError:
            text, notice = raw.decode("latin-1"), "not valid UTF-8; decoded as latin-1"
    controls = sum(1 for ch in text[:8192] if unicodedata.category(ch) == "Cc" and ch not in "\n\r\t\f")
    if controls > max(8, len(text[:8192]) // 50):
        raise UnreadableFile("looks like a binary file, not text")
    return text.replace("\r\n", "\n").replace("\r", "\n"), notice


def collapse_ws(text: str, strip: bool = True) -> str:
    """Runs of whitespace (newlines included) become one space; the ends are stripped unless
    ``strip=False`` (the app keeps them, to join pieces of a sentence). A chunk's text is
    ``collapse_ws(original[start:end])``."""
    s = WS.sub(" ", text)
    return s.strip() if strip else s


def fold(text: str) -> str:
    """The search form, lower-cased, accents dropped ("Türkiye" -> "turkiye"): what words are
    compared in (the lexical index, answer matching)."""
    s = unicodedata.normalize("NFKD", search_form(text).lower())
    return "".join(c for c in s if not unicodedata.combining(c))


# ---------------------------------------------------------------------------------------------
# Search form: OCR repair and normalisation for embeddings and the lexical index.

#: Characters OCR engines put in place of Latin ones (Greek and Cyrillic look-alikes).
_HOMOGLYPHS = str.maketrans({
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X", "ο": "o", "ν": "v", "А": "A", "В": "B", "Е": "E", "К": "K",
    "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T", "Х": "X", "Г": "I", "а": "a", "е": "e",
    "о": "o", "р": "p", "с": "c", "х": "x", "\u00a0": " ", "’": "'", "‘": "'", "“": '"', "”": '"',
})

MONTHS = "(?:January|February|March|April|May|June|July|August|September|October|November|December)"

#: OCR slips seen in EU documents: (pattern, replacement). Applied to the search form only.
OCR_FIXES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"\bNA TO\b", "NATO"),
        (r"\bT[il]{2}rkiye\b", "Türkiye"),
        (r"\bEE AS\b", "EEAS"),
        (r"\bEM PACT\b", "EMPACT"),
        (r"\bSmuqqling\b", "Smuggling"),
        (r"\bsmuqqling\b", "smuggling"),
        (r"\bretums\b", "returns"),
        (r"\bSehinas\b", "Schinas"),
        (r"\b(\d)lh\b", r"\1th"),
        (r"\bMol\b", "MoI"),
        (rf"\bI ({MONTHS})\b", r"1 \1"),
        (rf"\b(\d+)({MONTHS})\b", r"\1 \2"),
        (rf"\b({MONTHS})and\b", r"\1 and"),
        (r"\blake forward\b", "take forward"),
        (r"\bBruxetles\b", "Bruxelles"),
        (r"\bBELG1Ë\b", "BELGIË"),
    )
)


@lru_cache(maxsize=4096)
def search_form(text: str) -> str:
    """Normalised text for matching: NFC, homoglyphs mapped, OCR slips repaired, line-break
    hyphenation joined ("anti- trafficking" -> "anti-trafficking"), whitespace collapsed."""
    s = unicodedata.normalize("NFC", text).translate(_HOMOGLYPHS)
    s = collapse_ws(s)
    for pat, rep in OCR_FIXES:
        s = pat.sub(rep, s)
    s = re.sub(r"(\w)- (?=[a-z])", r"\1-", s)  # "people- to-people", "anti- trafficking"
    return s


# ---------------------------------------------------------------------------------------------
# Places: headings that name a country or region are the leaves of a section path.

_PLACES = """
Afghanistan, Albania, Algeria, Andorra, Angola, Argentina, Armenia, Australia, Austria, Azerbaijan,
Bahrain, Bangladesh, Belarus, Belgium, Benin, Bhutan, Bolivia, Bosnia and Herzegovina, BiH, Botswana,
Brazil, Bulgaria, Burkina Faso, Burundi, Cambodia, Cameroon, Canada, Cape Verde, Cabo Verde,
Central African Republic, Chad, Chile, China, Colombia, Comoros, Congo, Costa Rica, Côte d'Ivoire,
Cote d'Ivoire, Ivory Coast, Croatia, Cuba, Cyprus, Czechia, Denmark, Djibouti, Ecuador, Egypt,
El Salvador, Eritrea, Estonia, Eswatini, Ethiopia, Finland, France, Gabon, Gambia, The Gambia, Georgia,
Germany, Ghana, Greece, Guatemala, Guinea, Guinea-Bissau, Haiti, Honduras, Hong Kong, Hungary, Iceland,
India, Indonesia, Iran, Iraq, Ireland, Israel, Italy, Jamaica, Japan, Jordan, Kazakhstan, Kenya, Kosovo,
Kuwait, Kyrgyzstan, Laos, Latvia, Lebanon, Lesotho, Liberia, Libya, Liechtenstein, Lithuania,
Luxembourg, Macao, Madagascar, Malawi, Malaysia, Maldives, Mali, Malta, Mauritania, Mauritius, Mexico,
Moldova, Monaco, Mongolia, Montenegro, Morocco, Mozambique, Myanmar, Namibia, Nepal, Netherlands,
New Zealand, Nicaragua, Niger, Nigeria, North Macedonia, Norway, Oman, Pakistan, Palestine, Panama,
Paraguay, Peru, Philippines, Poland, Portugal, Qatar, Romania, Russia, Rwanda, Saudi Arabia, Senegal,
Serbia, Sierra Leone, Singapore, Slovakia, Slovenia, Somalia, South Africa, South Sudan, Spain,
Sri Lanka, Sudan, Sweden, Switzerland, Syria, Taiwan, Tajikistan, Tanzania, Thailand, Togo, Tunisia,
Türkiye, Turkey, Turkmenistan, Uganda, Ukraine, United Arab Emirates, United Kingdom, United States,
Uruguay, Uzbekistan, Venezuela, Vietnam, Yemen, Zambia, Zimbabwe
"""
_REGIONS = """
Western Balkans, Balkans, North Africa, Sahel, Horn of Africa, East Africa, West Africa, Middle East,
Central Asia, South Asia, Latin America, Caribbean, Maghreb, Levant
"""
#: country names as documents write them (several per country: "Türkiye", "Turkey")
COUNTRY_NAMES = tuple(p.strip() for p in _PLACES.split(",") if p.strip())
COUNTRIES = frozenset(c.lower() for c in COUNTRY_NAMES)
PLACES = COUNTRIES | frozenset(p.strip().lower() for p in _REGIONS.split(",") if p.strip())


def is_place(heading: str) -> bool:
    """True when a heading is just a country or region name (case-insensitive, OCR-repaired)."""
    return search_form(collapse_ws(heading)).rstrip(":").strip().lower() in PLACES
