"""rag.text: the shared text functions and tables (whitespace, search form, folding, places)."""

from __future__ import annotations

import unicodedata

import pytest

from rag.text import MONTHS, PLACES, collapse_ws, fold, is_place, search_form


@pytest.mark.parametrize(
    "raw, fixed",
    [
        ("Finland joined NA TO, that", "Finland joined NATO, that"),
        ("between Bulgaria and Tiirkiye, can", "between Bulgaria and Türkiye, can"),
        ("Tlirkiye", "Türkiye"),
        ("the EE AS and EM PACT", "the EEAS and EMPACT"),
        ("migrant smuqqling", "migrant smuggling"),
        ("stepping up retums", "stepping up returns"),
        ("4lh migration dialogue", "4th migration dialogue"),
        ("Egyptian Mol via", "Egyptian MoI via"),
        ("as of I February 2024", "as of 1 February 2024"),
        ("on 1February", "on 1 February"),
        ("to lake forward", "to take forward"),
        ("1049 Bruxetles/Brussel, BELG1Ë", "1049 Bruxelles/Brussel, BELGIË"),
        ("anti- trafficking and people- to-people", "anti-trafficking and people-to-people"),
        ("Finland\u2019s \u201cborder\u201d", "Finland's \"border\""),
        ("\u0391 Greek capital alpha", "A Greek capital alpha"),
        ("multi\n  line\ttext ", "multi line text"),
        ("a\u00a0b", "a b"),
    ],
)
def test_search_form_repairs_ocr_slips(raw, fixed):
    assert search_form(raw) == fixed


@pytest.mark.parametrize("text", ["NATO", "Türkiye", "I am here", "anti- Smuggling", "Lake Geneva"])
def test_search_form_leaves_correct_text_alone(text):
    assert search_form(text) == text


def test_search_form_is_nfc():
    assert search_form("Cafe\u0301") == unicodedata.normalize("NFC", "Caf\u00e9")


@pytest.mark.parametrize("heading, expected", [("Tunisia", True), ("TUNISIA:", True), ("Tiirkiye", True), ("Brussels", False)])
def test_is_place(heading, expected):
    assert is_place(heading) is expected


def test_collapse_ws():
    assert collapse_ws("  a\n\n b\t\fc  ") == "a b c"


def test_collapse_ws_can_keep_the_ends():
    assert collapse_ws("  a\n\n b ", strip=False) == " a b "


@pytest.mark.parametrize("raw, folded", [("Türkiye", "turkiye"), ("CAFÉ au lait", "cafe au lait"), ("Tiirkiye", "turkiye"),
                                         ("NA TO", "nato")])
def test_fold_lowercases_drops_accents_and_repairs_ocr(raw, folded):
    assert fold(raw) == folded


def test_tables():
    assert {"finland", "tunisia", "western balkans"} <= PLACES and "brussels" not in PLACES
    import re

    assert re.fullmatch(MONTHS, "December") and not re.fullmatch(MONTHS, "Decembre")
