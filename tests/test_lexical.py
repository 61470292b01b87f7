

def test_long_forms_are_the_acronyms_a_document_spells_out():
    from rag.lexical import acronym_tokens, long_forms

    letter = ("Work on the EU-Tunisia Memorandum of Understanding continues.\n"
              "In line with the conclusions, the MoU was signed on 16 July.\n"
              "The Team Europe Initiative (TEI) supports it; the TEI is funded.\n"
              "ACTION PLAN\n"  # a heading in capitals is no acronym
              "Search and Rescue capacity: SAR operations rose. Other text about Some Alien Rules here.\n")
    forms = long_forms([letter])
    assert forms == {"memorandum of understanding": "MoU", "team europe initiative": "TEI"}  # SAR: two long forms
    assert acronym_tokens("When was the memorandum of understanding signed?", forms) == ["mou"]
    assert acronym_tokens("When was the memorandum signed?", forms) == []  # the whole long form only
    # an acronym another document spells out is not this one's
    assert long_forms(["The MoU was signed.", "A Memorandum of Understanding was signed."]) == {}


def test_a_question_spelling_out_an_acronym_also_searches_it():
    from rag.pipeline import query_tokens

    forms = {"memorandum of understanding": "MoU"}
    assert query_tokens("When was the memorandum of understanding with Tunisia signed?", forms)[-1] == "mou"
    assert "mou" not in query_tokens("When was the memorandum of understanding with Tunisia signed?")
