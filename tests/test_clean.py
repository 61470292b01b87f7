"""Stage 2: layout analysis (pages, furniture, units), headings and place labels."""

from __future__ import annotations

import pytest

from rag.clean import analyse, heading_title, place_label


def units(text: str) -> list[tuple[str, int, int, str]]:
    """(kind, level, page, text) of every unit, for exact comparisons."""
    return [(u.kind, u.level, u.page, text[u.start : u.end]) for u in analyse(text).units]


# ---------------------------------------------------------------------------------------------
# Pages


@pytest.mark.parametrize(
    "text, page_starts, pages",
    [
        ("Alpha one.\n\fBeta two.\n\fGamma three.", (0, 12, 23), [1, 2, 3]),  # form feeds (PDF pages)
        ("Alpha one.\fBeta two.", (0, 11), [1, 2]),
        ("First page text.\n\n\n\nSecond page text.", (0, 20), [1, 2]),  # 3 blank lines
        ("First page text.\n\n\n\n\n\nSecond page text.", (0, 22), [1, 2]),  # more than 3
        ("First page text.\n\n\nSecond page text.", (0,), [1, 1]),  # 2 blank lines: same page
        ("First page text.\n\nSecond page text.", (0,), [1, 1]),
    ],
    ids=["form-feeds", "bare-form-feed", "three-blank-lines", "five-blank-lines", "two-blank-lines", "one-blank-line"],
)
def test_page_breaks(text, page_starts, pages):
    layout = analyse(text)
    assert layout.page_starts == page_starts
    assert [u.page for u in layout.units] == pages


def test_single_space_indent_marks_a_page_start_in_ocr_text():
    text = "The first page has a sentence.\nIt goes on here.\n Second page starts here.\nAnd it continues."
    layout = analyse(text)
    assert layout.page_starts == (0, 48)
    assert units(text) == [
        ("text", 0, 1, "The first page has a sentence.\nIt goes on here."),
        ("text", 0, 2, "Second page starts here.\nAnd it continues."),
    ]


def test_single_space_indent_is_ignored_when_common():
    # two of four lines indented by one space: indentation, not page starts
    text = "The first page has a sentence.\n Indented two.\n Indented three.\nAnd it continues."
    layout = analyse(text)
    assert layout.page_starts == (0,)
    assert units(text) == [("text", 0, 1, text)]


def test_leading_space_on_the_first_line_is_not_a_page_break():
    text = " Dear colleagues,\n\nWe met in May."
    assert analyse(text).page_starts == (0,)


def test_page_at_maps_offsets_to_pages():
    text = "Alpha one.\n\fBeta two.\n\fGamma three."
    layout = analyse(text)
    assert [layout.page_at(text.index(w)) for w in ("Alpha", "Beta", "Gamma")] == [1, 2, 3]


def test_real_corpus_has_19_pages_starting_on_the_known_lines(real_text):
    layout = analyse(real_text)
    first_lines = [real_text.count("\n", 0, s) + 1 for s in layout.page_starts]
    # the same page map the evaluation set is checked against (tests/test_qa_set.py)
    assert first_lines == [1, 39, 81, 131, 179, 225, 241, 324, 393, 456, 518, 555, 615, 672, 733, 797, 826, 887, 963]


# ---------------------------------------------------------------------------------------------
# Furniture


def test_registration_stamp_is_furniture():
    text = "Some text here.\nRef. Ares(2025)2524801 - 28/03/2025\nMore text here."
    layout = analyse(text)
    assert layout.furniture == ((16, 51),)
    assert units(text) == [("text", 0, 1, "Some text here."), ("text", 0, 1, "More text here.")]


def test_commission_footer_and_page_numbers_are_furniture():
    footer = "Commission européenne/Europese Commissie, 1049 Bruxelles/Brussel, BELGIQUE/BELGIË Tel. +32 2299 1111"
    text = f"Para one is here.\n\n{footer}\n\nPara two is here.\n\n3 / 12\n\nPage 4 of 12\n\n7\n"
    layout = analyse(text)
    spans = [text[a:b] for a, b in layout.furniture]
    assert spans == [footer, "3 / 12", "Page 4 of 12", "7"]
    assert units(text) == [("text", 0, 1, "Para one is here."), ("text", 0, 1, "Para two is here.")]


def test_a_paragraph_does_not_continue_across_furniture():
    # the sentence is unfinished before the stamp, but the stamp separates two units
    text = "The plan was agreed\nRef. Ares(2025)2524801 - 28/03/2025\nby the ministers in May."
    got = units(text)
    assert all("Ares" not in t for *_, t in got)


def test_repeated_running_header_is_furniture_on_long_documents():
    pages = [f"Migration update\n\nThe text of page {n} is here." for n in range(1, 6)]
    text = "\f".join(pages)
    layout = analyse(text)
    assert [text[a:b] for a, b in layout.furniture] == ["Migration update"] * 5
    assert [t for *_, t in units(text)] == [f"The text of page {n} is here." for n in range(1, 6)]


def test_real_corpus_footer_and_stamp_are_furniture(real_text):
    layout = analyse(real_text)
    spans = [real_text[a:b] for a, b in layout.furniture]
    assert len(spans) == 2
    assert spans[0].startswith("Commission européenne/Europese Commissie, 1049")
    assert spans[1] == "Ref. Ares(2025)2524801 - 28/03/2025"
    for u in layout.units:
        assert "Ref. Ares" not in real_text[u.start : u.end]
        assert "Commission européenne" not in real_text[u.start : u.end]


# ---------------------------------------------------------------------------------------------
# Units

TINY = (
    "INTRODUCTION\n\n"
    "The plan was agreed by the ministers of the interior of all the Member States in\n\n"
    "the meeting of May.\n\n"
    "A new paragraph starts.\n\n"
    "Key actions:\n"
    "• First item is here.\n"
    "• Second item runs on to\n\n"
    "Tunisian waters.\n"
    "- Dash item.\n"
    "o Seven boats.\n"
    "> Next step one.\n"
    "> Next step two\n"
    "continues here.\n\n"
    "Serbia\n\n"
    "Serbia text here.\n\n"
    "Background\n\n"
    "Some text follows here."
)


def test_units_of_a_small_document():
    assert units(TINY) == [
        ("heading", 1, 1, "INTRODUCTION"),
        ("text", 0, 1, "The plan was agreed by the ministers of the interior of all the Member States in\n\nthe meeting of May."),
        ("text", 0, 1, "A new paragraph starts."),
        ("heading", 4, 1, "Key actions:"),
        ("bullet", 0, 1, "• First item is here."),
        ("bullet", 0, 1, "• Second item runs on to\n\nTunisian waters."),
        ("bullet", 0, 1, "- Dash item."),
        ("bullet", 0, 1, "o Seven boats."),
        ("step", 0, 1, "> Next step one."),
        ("step", 0, 1, "> Next step two\ncontinues here."),
        ("heading", 5, 1, "Serbia"),
        ("text", 0, 1, "Serbia text here."),
        ("heading", 3, 1, "Background"),
        ("text", 0, 1, "Some text follows here."),
    ]


def test_units_are_exact_trimmed_spans_in_order():
    layout = analyse(TINY)
    prev_end = 0
    for u in layout.units:
        span = TINY[u.start : u.end]
        assert span == span.strip() and span
        assert u.start >= prev_end
        prev_end = u.end


@pytest.mark.parametrize(
    "text, expected",
    [
        # a paragraph cut mid-sentence by a blank line continues when the next line is lowercase
        (
            "We have proposed an upgrade of EU legislation to prevent and respond to\n\nmigrant smuggling.",
            [("text", 0, 1, "We have proposed an upgrade of EU legislation to prevent and respond to\n\nmigrant smuggling.")],
        ),
        # ... also when the paragraph's only line before the blank is short
        (
            "The plan was agreed by\n\nthe ministers in May.",
            [("text", 0, 1, "The plan was agreed by\n\nthe ministers in May.")],
        ),
        # a capitalised line after a finished sentence starts a new paragraph
        (
            "The first paragraph ends here.\n\nThe second paragraph starts here.",
            [("text", 0, 1, "The first paragraph ends here."), ("text", 0, 1, "The second paragraph starts here.")],
        ),
        # a paragraph cut by a page break continues only when cut mid-sentence
        (
            "The plan was agreed by all the ministers of the interior of the Member States in\fthe meeting of May.",
            [("text", 0, 1, "The plan was agreed by all the ministers of the interior of the Member States in\fthe meeting of May.")],
        ),
        (
            "The plan was agreed.\fThe meeting was in May.",
            [("text", 0, 1, "The plan was agreed."), ("text", 0, 2, "The meeting was in May.")],
        ),
    ],
    ids=["lowercase-after-blank", "short-line-then-lowercase", "new-paragraph", "across-page-mid-sentence", "page-after-full-stop"],
)
def test_continuation_lines(text, expected):
    assert units(text) == expected


def test_paragraph_continued_on_the_next_page_spans_two_pages():
    text = "The plan was agreed by all the ministers of the interior of the Member States in\fthe meeting of May."
    (u,) = analyse(text).units
    assert (u.page, u.page_end) == (1, 2)


@pytest.mark.parametrize(
    "line, kind",
    [
        ("• Bullet item.", "bullet"),
        ("▪ Square bullet.", "bullet"),
        ("- Dash item.", "bullet"),
        ("– En dash item.", "bullet"),
        ("* Star item.", "bullet"),
        ("o Letter o item.", "bullet"),
        ("a) Lettered item.", "bullet"),
        ("2. Numbered item.", "bullet"),
        ("> Next step.", "step"),
        (">Next step without space.", "step"),
        ("ordinary sentence here.", "text"),
        ("o is not a marker before lowercase.", "text"),
    ],
)
def test_list_markers(line, kind):
    text = f"Intro paragraph ends here.\n{line}"
    assert units(text)[-1][0] == kind


def test_multi_line_all_caps_heading_is_one_unit():
    text = "OUTREACH AND BROADER\nCOOPERATION\n\nSome text follows here."
    assert units(text) == [
        ("heading", 1, 1, "OUTREACH AND BROADER\nCOOPERATION"),
        ("text", 0, 1, "Some text follows here."),
    ]


def test_all_caps_parent_over_all_caps_sub_heading():
    text = "ACTION PLANS\n\nWESTERN\nBALKANS\n\nACTION PLAN\nDECEMBER 2022\n\nThe plan is being implemented."
    assert units(text) == [
        ("heading", 1, 1, "ACTION PLANS"),
        ("heading", 2, 1, "WESTERN\nBALKANS\n\nACTION PLAN\nDECEMBER 2022"),
        ("text", 0, 1, "The plan is being implemented."),
    ]


def test_narrow_block_under_all_caps_heading_is_a_subtitle():
    text = (
        "PREVENTION\n\nStrengthening\nexternal borders\nand prevention of\nirregular Migration\n\n"
        "The MoU was signed in July and is now being implemented."
    )
    got = units(text)
    assert got[1] == ("subtitle", 2, 1, "Strengthening\nexternal borders\nand prevention of\nirregular Migration")
    assert got[2] == ("text", 0, 1, "The MoU was signed in July and is now being implemented.")


# ---------------------------------------------------------------------------------------------
# Headings and places


def test_ocr_repair_reaches_the_search_text_but_not_the_citation_text(real_chunks):
    (chunk,) = [c for c in real_chunks if "joined NA TO" in c.text]
    assert "joined NATO" not in chunk.text
    assert "joined NATO" in chunk.search_text()


@pytest.mark.parametrize(
    "raw, title",
    [
        ("PREVENTION", "Prevention"),
        ("OUTREACH AND BROADER COOPERATION", "Outreach and Broader Cooperation"),
        ("WESTERN \nBALKANS \n\nACTION PLAN \nDECEMBER 2022", "Western Balkans Action Plan December 2022"),
        ("Frontex Status Agreements to conclude:", "Frontex Status Agreements to conclude"),
        ("Tiirkiye", "Türkiye"),
    ],
)
def test_heading_title(raw, title):
    assert heading_title(raw) == title


@pytest.mark.parametrize(
    "item, label",
    [
        ("• Serbia: latest round of talks", "Serbia"),
        ("Senegal: Decision before end 2023", "Senegal"),
        ("> Tunisia: meetings continue", "Tunisia"),
        ("• Bosnia and Herzegovina: talks", "Bosnia and Herzegovina"),
        ("o Western Balkans: plan", "Western Balkans"),
        ("Tiirkiye: talks", "Türkiye"),
        ("Mr Smith: hello there", None),
        ("• Serbia latest round", None),
    ],
)
def test_place_label(item, label):
    assert place_label(item) == label


@pytest.mark.parametrize("close", ["Yours sincerely,", "Yours faithfully,", "Kind regards,", "Best regards", "Sincerely,"])
def test_a_signature_after_a_complimentary_close_is_text_not_a_heading(close):
    text = f"It is only through unity that we can achieve this.\n\n{close}\n\nUrsula von der Leyen\n\nANNEX\n\nThe annex text follows here."
    units = [(u.kind, text[u.start:u.end]) for u in analyse(text).units]
    assert ("text", "Ursula von der Leyen") in units and ("heading", "ANNEX") in units
    # without the close, a short capitalised line on its own is still a heading
    plain = "It is only through unity that we can achieve this.\n\nUrsula von der Leyen\n\nThe annex text follows here."
    assert ("heading", "Ursula von der Leyen") in [(u.kind, plain[u.start:u.end]) for u in analyse(plain).units]
