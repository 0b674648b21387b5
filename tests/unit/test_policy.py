"""Prompt policy: blocklist matching after normalisation (evasions caught, innocent words spared) and the
classifier hook's loading and calling rules."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from reelforge.core.policy import InvalidPolicy, PolicyDecision, PromptPolicy, load_classifier, normalise
from reelforge.settings import Settings

POLICY = PromptPolicy(["gore", "blood bath", "Ärger"], [r"\bkill(ing|ed)?\s+(him|her)\b"])


@pytest.mark.parametrize("prompt", [
    "a scene full of gore",
    "GORE everywhere",
    "ｇｏｒｅ in full-width letters",  # NFKC
    "g\u200bo\u200dre split by zero-width characters",
    "go\u00adre with a soft hyphen",
    "gōre with a combining macron",  # NFKD + combining marks dropped
    "a blood\u00a0bath across a non-breaking space",
    "a blood \n\t bath across a line break",
    "ärger",  # the term's own accent is normalised the same way
    "AERGER is not it, but ÄRGER is",
    "then killing her",
])
def test_blocked(prompt: str) -> None:
    assert POLICY.check_blocklist(prompt) is not None, prompt


@pytest.mark.parametrize("prompt", [
    "a gorilla in a forest",  # whole words only
    "bloodbath",  # a phrase does not match the words run together
    "a bath of blood",
    "killer whale",
    "",
])
def test_allowed(prompt: str) -> None:
    assert POLICY.check_blocklist(prompt) is None, prompt


def test_normalise_is_idempotent_and_folds_case() -> None:
    text = "Ｆｕｌｌ\u200b  Wïdth\tSTRASSE ß"
    assert normalise(text) == normalise(normalise(text)) == "full width strasse ss"


def test_the_rule_that_refused_is_named_without_the_term() -> None:
    assert POLICY.check_blocklist("gore") == "blocklist term"
    assert POLICY.check_blocklist("killed him") == "blocklist regex #1"


def decide(policy: PromptPolicy, prompt: str) -> tuple[PolicyDecision, str]:
    return asyncio.run(policy.decide(prompt, "acme"))


def test_refusal_message_does_not_echo_the_term() -> None:
    decision, rule = decide(POLICY, "lots of gore")
    assert not decision.allowed and rule == "blocklist term"
    assert "gore" not in decision.reason and "rephrase" in decision.reason


@pytest.mark.parametrize("path", ["tests.fixtures.prompt_classifiers:no_dragons",
                                  "tests.fixtures.prompt_classifiers:async_no_cats"])
def test_classifier_sync_or_async(path: str) -> None:
    policy = PromptPolicy.from_settings([], [], path)
    assert decide(policy, "a horse")[0].allowed
    refused, rule = decide(policy, "a dragon and a cat")
    assert not refused.allowed and refused.reason and rule == "classifier"


def test_blocklist_is_checked_before_the_classifier() -> None:
    policy = PromptPolicy(["gore"], [], load_classifier("tests.fixtures.prompt_classifiers:broken"))
    assert decide(policy, "gore")[1] == "blocklist term"
    with pytest.raises(RuntimeError):
        decide(policy, "a horse")


def test_a_classifier_returning_something_else_is_an_error() -> None:
    policy = PromptPolicy.from_settings([], [], "tests.fixtures.prompt_classifiers:wrong_type")
    with pytest.raises(TypeError, match="PolicyDecision"):
        decide(policy, "a horse")


@pytest.mark.parametrize(("path", "message"), [
    ("tests.fixtures.prompt_classifiers.no_dragons", "package.module:function"),
    ("tests.fixtures.no_such_module:f", "cannot import"),
    ("tests.fixtures.prompt_classifiers:missing", "no function"),
    ("tests.fixtures.prompt_classifiers:NOT_CALLABLE", "no function"),
])
def test_unusable_classifier_paths_fail_at_start(path: str, message: str) -> None:
    with pytest.raises(InvalidPolicy, match=message):
        load_classifier(path)


def test_an_invalid_regex_is_refused_by_the_settings() -> None:
    with pytest.raises(ValidationError, match="not a valid regular expression"):
        Settings(environment="development", prompt_blocklist_regexes=["(unclosed"])
