"""Which betas, and which beta-gated body fields, a translated request may carry upstream.

Bedrock and Vertex answer 400 ``invalid beta flag`` for a beta they do not know, and 400
``Extra inputs are not permitted`` for a body field whose beta is absent (PROTOCOLS.md §1.9,
§6.1 step 4). A Claude Code session pointed at the gateway with ``ANTHROPIC_BASE_URL`` sends
the whole first-party set, so translating it as-is breaks every turn. A provider's
:class:`BetaPolicy` decides what travels:

* ``filter`` (the default for translation): betas not in ``allowed`` are removed, then every
  body field paired with a beta that did not survive is removed with it, and ``role:"system"``
  messages (beta ``mid-conversation-system``) are folded into user text, as Claude Code's own
  Bedrock mode does with its agent list.
* ``passthrough``: everything is forwarded; the provider's 400 reaches the client verbatim.

Same-format requests never come here: pass-through stays byte-exact.

The default lists are the betas each provider is known to accept as of 2026-05: for Bedrock,
the ones AWS documents for Claude on InvokeModel, which include every beta Claude Code 2.1.197
sends in its own Bedrock mode; for Vertex, Claude Code's own third-party allow-list (the set
it keeps for Bedrock/Vertex) plus the ones it sends in Vertex mode. ``claude-code-20250219``
is not in the Bedrock list: Claude Code never puts it in a Bedrock body, and some Bedrock
models refuse every beta but a few.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import ConfigError
from .typedefs import JSON

__all__ = (
    "BEDROCK_BETAS",
    "VERTEX_BETAS",
    "BetaPolicy",
    "Filtered",
    "beta_family",
    "beta_policy_from_options",
)

BEDROCK_BETAS: tuple[str, ...] = (
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
)
VERTEX_BETAS: tuple[str, ...] = (
    "claude-code-20250219",
    "computer-use-2025-01-24",
    "token-efficient-tools-2025-02-19",
    "output-128k-2025-02-19",
    "interleaved-thinking-2025-05-14",
    "web-search-2025-03-05",
    "context-management-2025-06-27",
    "context-1m-2025-08-07",
    "tool-search-tool-2025-10-19",
    "effort-2025-11-24",
    "structured-outputs-2025-12-15",
)

_DATE = re.compile(r"-\d{4}-?\d{2}-?\d{2}$")

# Body fields that exist only with a beta of one of these families.
_CONTEXT_MANAGEMENT = frozenset({"context-management"})
_OUTPUT_CONFIG = {
    "effort": frozenset({"effort"}),
    "format": frozenset({"structured-outputs"}),
    "task_budget": frozenset({"task-budgets"}),
}
_TOP_LEVEL = {"output_format": frozenset({"structured-outputs"})}
_TOOL_FIELDS = {
    "defer_loading": frozenset({"tool-search-tool", "advanced-tool-use"}),
    "input_examples": frozenset({"tool-examples", "advanced-tool-use"}),
    "allowed_callers": frozenset({"advanced-tool-use"}),
    "strict": frozenset({"structured-outputs"}),
    "eager_input_streaming": frozenset({"fine-grained-tool-streaming"}),
}
_CACHE_SCOPE = frozenset({"prompt-caching-scope"})
_SYSTEM_MESSAGES = frozenset({"mid-conversation-system"})


def beta_family(beta: str) -> str:
    """``context-management-2025-06-27`` → ``context-management`` (the date cut off)."""
    return _DATE.sub("", beta)


@dataclass(frozen=True, slots=True, kw_only=True)
class Filtered:
    """A request after the policy: what goes upstream and what was taken out."""

    body: JSON
    betas: list[str]
    dropped_betas: tuple[str, ...] = ()
    #: Body paths removed (``context_management``, ``tools.3.defer_loading``, ``messages.1``...).
    dropped_fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class BetaPolicy:
    """What a provider accepts from a translated request (see the module docstring)."""

    mode: Literal["filter", "passthrough"] = "filter"
    allowed: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def filter(cls, allowed: Iterable[str]) -> BetaPolicy:
        return cls(mode="filter", allowed=frozenset(allowed))

    @classmethod
    def passthrough(cls) -> BetaPolicy:
        return cls(mode="passthrough")

    def apply(self, body: JSON, betas: list[str]) -> Filtered:
        """``body`` (never mutated) and ``betas`` as the provider may receive them."""
        if self.mode == "passthrough":
            return Filtered(body=body, betas=betas)
        kept = [b for b in betas if b in self.allowed]
        families = {beta_family(b) for b in kept}
        dropped: list[str] = []
        out = dict(body)
        if "context_management" in out and not families & _CONTEXT_MANAGEMENT:
            del out["context_management"]
            dropped.append("context_management")
        for name, needs in _TOP_LEVEL.items():
            if name in out and not families & needs:
                del out[name]
                dropped.append(name)
        _strip_output_config(out, families, dropped)
        _strip_tools(out, families, dropped)
        if not families & _CACHE_SCOPE:
            _strip_cache_scope(out, dropped)
        if not families & _SYSTEM_MESSAGES:
            _fold_system_messages(out, dropped)
        return Filtered(
            body=out,
            betas=kept,
            dropped_betas=tuple(b for b in betas if b not in self.allowed),
            dropped_fields=tuple(dropped),
        )


def _strip_output_config(out: JSON, families: set[str], dropped: list[str]) -> None:
    config = out.get("output_config")
    if not isinstance(config, dict):
        return
    kept = {
        k: v for k, v in config.items() if k not in _OUTPUT_CONFIG or families & _OUTPUT_CONFIG[k]
    }
    dropped.extend(f"output_config.{k}" for k in config if k not in kept)
    if kept:
        out["output_config"] = kept
    else:
        del out["output_config"]
        dropped.append("output_config")


def _strip_tools(out: JSON, families: set[str], dropped: list[str]) -> None:
    tools = out.get("tools")
    if not isinstance(tools, list):
        return
    gone = {name for name, needs in _TOOL_FIELDS.items() if not families & needs}
    rewritten: list[Any] = []
    for index, tool in enumerate(tools):
        if isinstance(tool, dict) and gone & tool.keys():
            dropped.extend(f"tools.{index}.{name}" for name in tool if name in gone)
            tool = {k: v for k, v in tool.items() if k not in gone}
        rewritten.append(tool)
    out["tools"] = rewritten


def _without_scope(value: Any, path: str, dropped: list[str]) -> Any:
    """``value`` with ``cache_control.scope`` removed at any depth (copied only where changed)."""
    if isinstance(value, list):
        items = [_without_scope(v, f"{path}.{i}", dropped) for i, v in enumerate(value)]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    if not isinstance(value, dict):
        return value
    changed: dict[str, Any] = {}
    for key, item in value.items():
        if key == "cache_control" and isinstance(item, dict) and "scope" in item:
            changed[key] = {k: v for k, v in item.items() if k != "scope"}
            dropped.append(f"{path}.cache_control.scope".lstrip("."))
        elif isinstance(item, (list, dict)):
            new = _without_scope(item, f"{path}.{key}", dropped)
            if new is not item:
                changed[key] = new
    return {**value, **changed} if changed else value


def _strip_cache_scope(out: JSON, dropped: list[str]) -> None:
    for key in ("system", "messages", "tools"):
        if key in out:
            out[key] = _without_scope(out[key], key, dropped)


def _reminder(content: Any) -> list[Any]:
    """A system message's content as user text blocks, marked the way Claude Code marks
    injected context; other block fields (``cache_control``) are kept."""
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
    if not isinstance(blocks, list):
        return []
    out: list[Any] = []
    for block in blocks:
        if isinstance(block, dict) and block.get("type") == "text":
            text = str(block.get("text", ""))
            block = {**block, "text": f"<system-reminder>\n{text}\n</system-reminder>"}
        out.append(block)
    return out


def _blocks(content: Any) -> list[Any]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content) if isinstance(content, list) else [content]


def _fold_system_messages(out: JSON, dropped: list[str]) -> None:
    """Move each ``role:"system"`` message's text to the end of a user message.

    The end of the user message right before it, else of the next user message (never the
    start: ``tool_result`` blocks must lead a user turn), else a new trailing user message.
    Appending keeps every earlier byte, so prompt-cache prefixes stay stable across turns.
    """
    messages = out.get("messages")
    if not isinstance(messages, list) or not any(
        isinstance(m, dict) and m.get("role") == "system" for m in messages
    ):
        return
    result: list[Any] = []
    pending: list[Any] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            result.append(message)
            continue
        if message.get("role") == "system":
            dropped.append(f"messages.{index}")
            blocks = _reminder(message.get("content"))
            previous = result[-1] if result else None
            if not pending and isinstance(previous, dict) and previous.get("role") == "user":
                result[-1] = {**previous, "content": _blocks(previous.get("content", [])) + blocks}
            else:
                pending.extend(blocks)
            continue
        if pending and message.get("role") == "user":
            message = {**message, "content": _blocks(message.get("content", [])) + pending}
            pending = []
        result.append(message)
    if pending:
        result.append({"role": "user", "content": pending})
    out["messages"] = result


def beta_policy_from_options(
    provider: str, options: Mapping[str, Any], default: Iterable[str]
) -> BetaPolicy:
    """The policy from ``[providers.NAME]`` keys ``betas`` and ``allowed_betas``.

    ``betas = "filter"`` (default) keeps ``allowed_betas`` (default: ``default``);
    ``betas = "passthrough"`` forwards everything and takes no list.
    """
    mode = options.get("betas", "filter")
    if mode not in ("filter", "passthrough"):
        raise ConfigError(f'providers.{provider}.betas: expected "filter" or "passthrough"')
    allowed = options.get("allowed_betas")
    if mode == "passthrough":
        if allowed is not None:
            raise ConfigError(
                f'providers.{provider}.allowed_betas: only used with betas = "filter"'
            )
        return BetaPolicy.passthrough()
    if allowed is None:
        return BetaPolicy.filter(default)
    if not isinstance(allowed, list) or not all(isinstance(b, str) and b for b in allowed):
        raise ConfigError(f"providers.{provider}.allowed_betas: expected a list of beta names")
    return BetaPolicy.filter(allowed)
