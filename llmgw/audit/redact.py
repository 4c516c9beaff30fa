"""Redaction of secrets (always) and configured patterns from what the audit log keeps.

Secrets are matched three ways: by shape (Anthropic/OpenAI/AWS/GitHub/Google keys, JWTs,
bearer tokens, private key blocks), by name (a JSON or query field called ``api_key``,
``password``, ``token``...) and literally (the gateway's own provider keys and the
credential the client presented on this very request), so a key with no known shape is
still caught wherever it is echoed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote

__all__ = ("MASK", "NAMED_PATTERNS", "Redactor")

MASK = "[REDACTED]"

_SECRET_SHAPES = (
    r"sk-ant-[A-Za-z0-9_\-]{8,}",
    r"\bsk-[A-Za-z0-9_\-]{20,}",
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    r"\bgh[pousr]_[A-Za-z0-9]{30,}",
    r"\bxox[abprs]-[A-Za-z0-9\-]{10,}",
    r"\bAIza[0-9A-Za-z_\-]{35}",
    r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
    r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]{8,}",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
)
_SECRET_NAME = (
    r"[A-Za-z0-9_\-]*(?:api[_\-]?key|secret|passw(?:or)?d|token|authorization|credential"
    r"|access[_\-]?key|private[_\-]?key|session[_\-]?key|signature)s?"
)
# "name": "value" in JSON; the value is replaced, the name kept so the reader sees what was there.
_JSON_FIELD = re.compile(r'("' + _SECRET_NAME + r'"\s*:\s*)"(?:[^"\\]|\\.)*"', re.IGNORECASE)
_ASSIGNMENT = re.compile(
    r"(\b(?:aws_secret_access_key|password|passwd|api_key|apikey|secret)\s*[=:]\s*)[^\s\"',;]{6,}",
    re.IGNORECASE,
)
_SECRET_PARAM = re.compile(
    r"^(?:" + _SECRET_NAME + r"|key|sig|code|x-amz-[a-z\-]+|x-goog-[a-z\-]+)$", re.IGNORECASE
)

#: Opt-in patterns by name (``audit.redact_patterns = ["email"]``); anything else is a regex.
NAMED_PATTERNS = {
    "email": r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}",
    "phone": r"\+?\d[\d\s().\-]{8,}\d",
    "ipv4": r"\b(?:\d{1,3}\.){3}\d{1,3}\b",
    "credit_card": r"\b(?:\d[ \-]?){13,16}\b",
}

#: Literals shorter than this are not redacted literally (too likely to hit ordinary text).
_MIN_LITERAL = 8
#: Short strings found clean are remembered (a user agent repeats on every request).
_CLEAN_MAX_LEN = 512
_CLEAN_MAX_ENTRIES = 4096


class Redactor:
    """Immutable after construction (but for a cache of strings that needed no redaction,
    which holds nothing the audit log would not store as is); safe to share across
    requests."""

    __slots__ = ("_clean", "_literals", "_patterns", "_queries")

    def __init__(self, *, literals: Iterable[str] = (), patterns: Iterable[str] = ()) -> None:
        self._literals = tuple(
            sorted({s for s in literals if len(s) >= _MIN_LITERAL}, key=len, reverse=True)
        )
        compiled = [re.compile(p) for p in _SECRET_SHAPES]
        for pattern in patterns:
            compiled.append(re.compile(NAMED_PATTERNS.get(pattern, pattern)))
        self._patterns = tuple(compiled)
        self._clean: set[str] = set()
        #: Query strings already redacted (the same few repeat: ``beta=true``).
        self._queries: dict[str, str] = {}

    def with_literals(self, literals: Iterable[str]) -> Redactor:
        """A copy that also redacts ``literals`` (e.g. one request's presented credential)."""
        clone = Redactor.__new__(Redactor)
        clone._patterns = self._patterns
        clone._clean = self._clean  # same patterns, so the same strings are clean
        clone._queries = self._queries  # kept only for queries no literal touched
        extra = {s for s in literals if len(s) >= _MIN_LITERAL}
        clone._literals = tuple(sorted(set(self._literals) | extra, key=len, reverse=True))
        return clone

    def text(self, text: str) -> str:
        for literal in self._literals:
            if literal in text:
                text = text.replace(literal, MASK)
        if text in self._clean:
            return text
        original = text
        for pattern in self._patterns:
            text = pattern.sub(MASK, text)
        text = _JSON_FIELD.sub(lambda m: f'{m.group(1)}"{MASK}"', text)
        text = _ASSIGNMENT.sub(lambda m: m.group(1) + MASK, text)
        if text == original and len(text) <= _CLEAN_MAX_LEN:
            if len(self._clean) >= _CLEAN_MAX_ENTRIES:
                self._clean.clear()
            self._clean.add(text)
        return text

    def opt_text(self, text: str | None) -> str | None:
        return None if text is None else self.text(text)

    def query(self, raw_query: str) -> str:
        """A query string with the values of secret-named parameters masked."""
        if not raw_query:
            return ""
        literal = any(s in raw_query for s in self._literals)
        if not literal and (known := self._queries.get(raw_query)) is not None:
            return known
        parts = []
        for name, value in parse_qsl(raw_query, keep_blank_values=True):
            shown = MASK if _SECRET_PARAM.match(name) else self.text(value)
            parts.append(f"{quote(name, safe='')}={quote(shown, safe='[]')}")
        redacted = "&".join(parts)
        if not literal and len(raw_query) <= _CLEAN_MAX_LEN:
            if len(self._queries) >= _CLEAN_MAX_ENTRIES:
                self._queries.clear()
            self._queries[raw_query] = redacted
        return redacted
