"""The request validation Bedrock and Vertex apply to Claude bodies, for the fakes' strict mode.

Real Bedrock answers 400 ``invalid beta flag`` for a beta it does not support, and 400
``<path>: Extra inputs are not permitted`` for a body field it does not know, which includes
every field whose beta is not in the request (PROTOCOLS.md §1.9). The accepted lists here are
written out independently of ``llmgw.betas`` on purpose: the fake stands for the provider.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ("BEDROCK_ACCEPTED_BETAS", "VERTEX_ACCEPTED_BETAS", "strict_violation")

#: What AWS documents for Claude on InvokeModel (2026-05).
BEDROCK_ACCEPTED_BETAS = frozenset(
    {
        "computer-use-2024-10-22",
        "computer-use-2025-01-24",
        "token-efficient-tools-2025-02-19",
        "output-128k-2025-02-19",
        "interleaved-thinking-2025-05-14",
        "dev-full-thinking-2025-05-14",
        "context-management-2025-06-27",
        "context-1m-2025-08-07",
        "tool-search-tool-2025-10-19",
        "tool-examples-2025-10-29",
        "effort-2025-11-24",
    }
)
#: What Claude Code sends to Vertex in its own Vertex mode, and its third-party allow-list.
VERTEX_ACCEPTED_BETAS = frozenset(
    {
        "claude-code-20250219",
        "interleaved-thinking-2025-05-14",
        "web-search-2025-03-05",
        "context-management-2025-06-27",
        "context-1m-2025-08-07",
        "tool-search-tool-2025-10-19",
        "effort-2025-11-24",
        "structured-outputs-2025-12-15",
    }
)

_FIELDS = frozenset(
    {
        "anthropic_version",
        "anthropic_beta",
        "max_tokens",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "metadata",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "thinking",
        "stream",
    }
)
# Field → the beta families that make it exist.
_GATED = {
    "context_management": ("context-management",),
    "output_config": ("effort", "structured-outputs"),
    "output_format": ("structured-outputs",),
}
_TOOL_FIELDS = frozenset({"name", "description", "input_schema", "cache_control", "type"})
_GATED_TOOL_FIELDS = {
    "defer_loading": ("tool-search-tool", "advanced-tool-use"),
    "strict": ("structured-outputs",),
    "input_examples": ("tool-examples", "advanced-tool-use"),
    "eager_input_streaming": ("fine-grained-tool-streaming",),
}
_DATE = re.compile(r"-\d{4}-?\d{2}-?\d{2}$")


def _cache_scope(value: Any, path: str) -> str | None:
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _cache_scope(item, f"{path}.{index}")
            if found:
                return found
    elif isinstance(value, dict):
        control = value.get("cache_control")
        if isinstance(control, dict) and "scope" in control:
            return f"{path}.cache_control.scope"
        for key, item in value.items():
            if isinstance(item, (list, dict)) and key != "cache_control":
                found = _cache_scope(item, f"{path}.{key}")
                if found:
                    return found
    return None


def strict_violation(
    body: dict[str, Any], betas: list[str], accepted: frozenset[str]
) -> str | None:
    """The provider's 400 message for this request, or ``None`` when it would be accepted."""
    if any(beta not in accepted for beta in betas):
        return "invalid beta flag"
    families = {_DATE.sub("", beta) for beta in betas}
    for key in body:
        needs = _GATED.get(key)
        if key not in _FIELDS and (needs is None or not families.intersection(needs)):
            return f"{key}: Extra inputs are not permitted"
    for index, message in enumerate(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") not in ("user", "assistant"):
            return f"messages.{index}.role: Input should be 'user' or 'assistant'"
    for index, tool in enumerate(body.get("tools") or []):
        if not isinstance(tool, dict) or tool.get("type", "custom") != "custom":
            continue
        for key in tool:
            needs = _GATED_TOOL_FIELDS.get(key)
            if key not in _TOOL_FIELDS and (needs is None or not families.intersection(needs)):
                return f"tools.{index}.custom.{key}: Extra inputs are not permitted"
    if "prompt-caching-scope" not in families:
        for key in ("system", "messages", "tools"):
            found = _cache_scope(body.get(key), key)
            if found:
                return f"{found}: Extra inputs are not permitted"
    return None
