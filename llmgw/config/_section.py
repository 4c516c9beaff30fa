"""The validating reader behind every config section: remembers its key path and which keys
were read, so an error names ``routes[2].deployments[0].weight`` and unknown keys are errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError

__all__ = ("MISSING", "Section")

MISSING: Any = object()


class Section:
    """A mapping being validated; remembers its path and which keys were read."""

    def __init__(self, data: Any, prefix: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{prefix or '<root>'}: expected a table")
        self.data: Mapping[str, Any] = data
        self.prefix = prefix
        self.seen: set[str] = set()

    def path(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def _get(self, key: str, default: Any, kinds: tuple[type, ...], what: str) -> Any:
        self.seen.add(key)
        if key not in self.data:
            if default is MISSING:
                raise ConfigError(f"{self.path(key)}: required")
            return default
        value = self.data[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ConfigError(f"{self.path(key)}: expected {what}, got {type(value).__name__}")
        return value

    def get_str(self, key: str, default: Any = MISSING) -> Any:
        return self._get(key, default, (str,), "a string")

    def opt_str(self, key: str) -> str | None:
        value: str | None = self._get(key, None, (str,), "a string")
        return value

    def get_int(self, key: str, default: Any = MISSING) -> Any:
        return self._get(key, default, (int,), "an integer")

    def opt_int(self, key: str) -> int | None:
        value: int | None = self._get(key, None, (int,), "an integer")
        return value

    def get_float(self, key: str, default: Any = MISSING) -> Any:
        return float(self._get(key, default, (int, float), "a number"))

    def get_bool(self, key: str, default: Any = MISSING) -> Any:
        return self._get(key, default, (bool,), "true or false")

    def str_tuple(self, key: str) -> tuple[str, ...]:
        values = self._get(key, [], (list,), "a list of strings")
        for i, value in enumerate(values):
            if not isinstance(value, str):
                raise ConfigError(f"{self.path(key)}[{i}]: expected a string")
        return tuple(values)

    def section(self, key: str) -> Section:
        return Section(self._get(key, {}, (Mapping,), "a table"), self.path(key))

    def table(self, key: str) -> Mapping[str, Any]:
        value: Mapping[str, Any] = self._get(key, {}, (Mapping,), "a table")
        return value

    def array(self, key: str) -> list[Any]:
        value: list[Any] = self._get(key, [], (list,), "an array of tables")
        return value

    def rest(self) -> dict[str, Any]:
        """Keys not read yet (provider options); marks them read."""
        out = {k: v for k, v in self.data.items() if k not in self.seen}
        self.seen.update(out)
        return out

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise ConfigError(f"{self.path(unknown[0])}: unknown key")
