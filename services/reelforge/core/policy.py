"""Prompt policy, checked before a job is created: a blocklist of words, phrases and regular expressions,
then an optional classifier hook.

Both see the prompt normalised the same way, so trivial evasions match: Unicode NFKC (full-width and
other compatibility forms become plain letters), case folding, format characters removed (zero-width
space and joiners, soft hyphen, BOM), combining accents removed, runs of whitespace made one space.
Blocklist words and phrases match whole words only ("ass" does not refuse "class"). Not covered:
look-alike letters from other scripts (Cyrillic "а" for Latin "a") and letters split by spaces or
punctuation; a classifier is the place for those.

The classifier hook (setting `prompt_classifier`, "package.module:function") is called as
`function(prompt, tenant=...)` with the original prompt and returns a PolicyDecision; it may be a plain
function (run in a worker thread) or `async def`. If it raises, the create is refused with a 503: the
policy fails closed.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import re
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class PolicyDecision:
    allowed: bool
    # For a refusal: said to the client, so it must tell them what to change, and recorded in the audit log.
    reason: str = ""


ALLOW = PolicyDecision(True)
Classifier = Callable[..., PolicyDecision | Awaitable[PolicyDecision]]


class InvalidPolicy(ValueError):
    """The policy settings cannot be used (an unknown classifier, say); raised at start-up."""


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(ch for ch in unicodedata.normalize("NFKD", text)
                   if unicodedata.category(ch) not in ("Cf", "Mn"))
    return _SPACES.sub(" ", unicodedata.normalize("NFC", text)).strip()


def _term_pattern(term: str) -> str:
    return rf"(?<!\w){re.escape(normalise(term))}(?!\w)"


def load_classifier(path: str) -> Classifier:
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidPolicy(f"prompt_classifier {path!r} must be 'package.module:function'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidPolicy(f"prompt_classifier {path!r}: cannot import {module_name!r}: {exc}") from None
    for part in attr.split("."):
        target = getattr(target, part, None)
    if not callable(target):
        raise InvalidPolicy(f"prompt_classifier {path!r}: {module_name!r} has no function {attr!r}")
    classifier: Classifier = target
    return classifier


class PromptPolicy:
    def __init__(self, blocklist: Sequence[str] = (), regexes: Sequence[str] = (),
                 classifier: Classifier | None = None) -> None:
        terms = [_term_pattern(term) for term in blocklist if normalise(term)]
        # One alternation per kind: a prompt is scanned once however long the list is.
        self._terms = re.compile("|".join(terms)) if terms else None
        self._regexes = [re.compile(r, re.IGNORECASE) for r in regexes]
        self.classifier = classifier

    @classmethod
    def from_settings(cls, blocklist: Sequence[str], regexes: Sequence[str], classifier: str | None) -> PromptPolicy:
        return cls(blocklist, regexes, load_classifier(classifier) if classifier else None)

    def check_blocklist(self, prompt: str) -> str | None:
        """None if the prompt passes; otherwise which rule refused it, for the audit log only."""
        text = normalise(prompt)
        if self._terms is not None and self._terms.search(text):
            return "blocklist term"
        for i, pattern in enumerate(self._regexes):
            if pattern.search(text):
                return f"blocklist regex #{i + 1}"
        return None

    async def decide(self, prompt: str, tenant: str) -> tuple[PolicyDecision, str]:
        """-> (decision, what refused it for the audit log). Raises what the classifier raises."""
        rule = self.check_blocklist(prompt)
        if rule is not None:
            return PolicyDecision(False, "Your prompt contains wording our content policy does not allow; "
                                         "rephrase it without that content."), rule
        if self.classifier is None:
            return ALLOW, ""
        if inspect.iscoroutinefunction(self.classifier):
            decision = await self.classifier(prompt, tenant=tenant)
        else:
            decision = await asyncio.to_thread(self.classifier, prompt, tenant=tenant)
        if not isinstance(decision, PolicyDecision):
            raise TypeError(f"the prompt classifier returned {type(decision).__name__}, not a PolicyDecision")
        return decision, "" if decision.allowed else "classifier"
