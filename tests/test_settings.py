"""rag.settings: defaults, RAG_* variables, overrides, validation, the secret kept out of reprs, and
the process defaults the edges set (the only module that reads the environment)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.errors import BadSetting
from rag.settings import MODES, PROCESS_ENV, STRICTNESS, ChunkSettings, Settings, set_process_env


def test_from_env_reads_rag_variables_then_overrides():
    env = {"RAG_K": "7", "RAG_MODE": "lexical", "RAG_INDEX_DIR": "~/idx", "RAG_FOLLOW_SYMLINKS": "yes",
           "RAG_LLM_MODELS": "a, b,a", "UNRELATED": "x"}
    s = Settings.from_env(env, mode="dense", k=None)  # None keeps what the environment said
    assert (s.k, s.mode, s.follow_symlinks, s.llm_models) == (7, "dense", True, ("a", "b"))
    assert s.index_dir == Path("~/idx").expanduser()
    assert Settings.from_env({}) == Settings()


@pytest.mark.parametrize("env, words", [({"RAG_K": "seven"}, "RAG_K='seven'"), ({"RAG_FOLLOW_SYMLINKS": "maybe"}, "RAG_FOLLOW_SYMLINKS"),
                                        ({"RAG_MODE": "fuzzy"}, "mode")])
def test_bad_values_are_one_bad_setting_naming_the_variable(env, words):
    with pytest.raises(BadSetting, match=words):
        Settings.from_env(env)


def test_openai_api_key_is_used_when_no_llm_api_key_is_set(monkeypatch):
    from rag.generate import api_key

    monkeypatch.setenv("OPENAI_API_KEY", "sk-1")
    assert api_key(Settings()) == "sk-1" and api_key(Settings.from_env({"RAG_LLM_API_KEY": ""})) == "sk-1"
    assert api_key(Settings(llm_api_key="sk-2")) == "sk-2"
    monkeypatch.delenv("OPENAI_API_KEY")
    assert api_key(Settings()) == ""


def test_the_api_key_and_a_url_password_are_never_in_repr_or_to_dict():
    s = Settings(llm_api_key="sk-secret", llm_base_url="http://bob:hunter2@host:8/v1")
    assert "sk-secret" not in repr(s) and "hunter2" not in repr(s)
    assert s.to_dict()["llm_api_key"] == "***"


def test_with_changes_only_the_fields_given():
    s = Settings().with_(k=3, mode=None, chunking=ChunkSettings(target_words=10, max_words=30, min_words=2))
    assert (s.k, s.mode, s.chunking.target_words) == (3, Settings().mode, 10)


def test_choices_are_the_constants_the_cli_offers():
    from rag.cli import _parser

    ask = _parser()._subparsers._group_actions[0].choices["ask"]
    by_flag = {a.option_strings[0]: a.choices for a in ask._actions if a.option_strings}
    assert tuple(by_flag["--mode"]) == MODES and tuple(by_flag["--strictness"]) == STRICTNESS


def test_set_process_env_fills_only_what_the_user_left_unset():
    env = {"HF_HUB_OFFLINE": "0"}
    set_process_env(env)
    assert env["HF_HUB_OFFLINE"] == "0"  # the user's choice stands
    assert {k: env[k] for k in PROCESS_ENV if k != "HF_HUB_OFFLINE"} == {k: v for k, v in PROCESS_ENV.items() if k != "HF_HUB_OFFLINE"}
