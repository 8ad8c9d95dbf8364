"""Name -> function registries with errors that list what is registered."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


class UnknownNameError(KeyError):
    """An unknown registry name; the message lists the registered names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry:
    """A named mapping from strings to functions, filled with the `register` decorator."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._fns: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._fns and self._fns[name] is not fn:
                raise ValueError(f"{self.kind} '{name}' is already registered ({self._fns[name].__module__})")
            self._fns[name] = fn
            return fn

        return deco

    def __getitem__(self, name: str) -> Callable[..., Any]:
        try:
            return self._fns[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'; registered {self.kind}s: {', '.join(sorted(self._fns))}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._fns

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._fns))

    def names(self) -> list[str]:
        return sorted(self._fns)
