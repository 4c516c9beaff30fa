"""The route table: which deployments serve a model name a client sends (pure, no I/O)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .providers.base import Provider

__all__ = ("Deployment", "Route", "RoutePolicy", "RouteTable", "RouteTableHolder")


@dataclass(frozen=True, slots=True, kw_only=True)
class Deployment:
    """One way to serve a route: a provider and the model id that provider knows."""

    name: str
    provider: Provider
    #: The provider's model id; ``None`` sends the name the client asked for.
    model: str | None = None
    weight: float = 1.0
    max_concurrency: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutePolicy:
    """How a route picks a deployment, retries and times out.

    A ``None`` timeout falls back to the gateway's ``[upstream]`` setting.
    """

    #: ``weighted``, ``least_inflight`` or ``latency`` (see :mod:`llmgw.routing.strategies`).
    strategy: str = "weighted"
    #: Try the other deployments when one fails before the first byte.
    failover: bool = True
    #: Extra attempts after every deployment was tried once (with backoff).
    retries: int = 0
    connect_timeout: float | None = None
    first_byte_timeout: float | None = None
    idle_timeout: float | None = None
    #: Seconds a deployment that keeps failing is taken out before it is probed again.
    cooldown: float = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """A model name (or ``fnmatch`` pattern such as ``claude-*``) and its deployments."""

    model: str
    deployments: tuple[Deployment, ...]
    aliases: tuple[str, ...] = ()
    display_name: str | None = None
    policy: RoutePolicy = RoutePolicy()

    @property
    def is_pattern(self) -> bool:
        return any(ch in self.model for ch in "*?[")


#: Pattern lookups remembered per table (names come from clients: bounded).
_MATCHED_MAX = 4096


class RouteTable:
    """Exact names and aliases first (a dict lookup), then patterns in configured order.

    A name a pattern resolved is remembered, so a model served through ``claude-*`` costs
    a dict lookup too rather than an ``fnmatch`` per pattern per request; a table is never
    changed (a reload swaps in a new one), so what it remembered stays true.
    """

    __slots__ = ("_exact", "_matched", "_patterns", "routes")

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes: Sequence[Route] = tuple(routes)
        self._exact: dict[str, Route] = {}
        self._matched: dict[str, Route | None] = {}
        self._patterns: list[Route] = []
        for route in self.routes:
            if route.is_pattern:
                self._patterns.append(route)
            else:
                for name in (route.model, *route.aliases):
                    self._exact.setdefault(name, route)

    def resolve(self, model: str) -> Route | None:
        """The route for ``model``, or ``None`` when nothing routes it."""
        route = self._exact.get(model)
        if route is not None or not self._patterns:
            return route
        matched = self._matched
        if model in matched:
            return matched[model]
        found = next((r for r in self._patterns if fnmatch.fnmatchcase(model, r.model)), None)
        if len(matched) >= _MATCHED_MAX:
            matched.clear()
        matched[model] = found
        return found

    def listed(self) -> list[Route]:
        """Routes with a concrete name, in configured order (what ``/v1/models`` shows)."""
        return [route for route in self.routes if not route.is_pattern]


class RouteTableHolder:
    """The current :class:`RouteTable`, swappable while the application runs.

    Application state is frozen after startup, so a reload replaces the table inside this
    holder. A request resolves its route once and keeps those objects, which is why a swap
    never disturbs a stream already in flight.
    """

    __slots__ = ("generation", "table")

    def __init__(self, table: RouteTable) -> None:
        self.table = table
        self.generation = 0

    def swap(self, table: RouteTable) -> RouteTable:
        """Install ``table``; returns the one it replaced."""
        old, self.table = self.table, table
        self.generation += 1
        return old

    def resolve(self, model: str) -> Route | None:
        return self.table.resolve(model)

    def listed(self) -> list[Route]:
        return self.table.listed()
