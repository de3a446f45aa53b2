"""One registry idiom for every table of named things: gradient rules, kink freezers, samplers, aggregators,
named methods, metrics, experiments and datasets.

A :class:`Registry` is a dict from name to object. :meth:`Registry.add` (or the :meth:`Registry.register`
decorator) refuses a second object under one name, which is a bug of the harness, not of the user's input
(RuntimeError, "internal error"); :meth:`Registry.lookup` of an unknown name raises the registry's user-facing
error, listing the known names.
"""

from __future__ import annotations

from typing import Callable, Iterable

from harness.core.errors import HarnessError


class Registry(dict):
    """Names to objects of one kind (``what``, as messages say it), with one duplicate and one lookup policy."""

    def __init__(self, what: str, error: type[Exception] = HarnessError, entries: Iterable[tuple] = (),
                 sorted_names: bool = False):
        super().__init__()
        self.what, self.error, self.sorted_names = what, error, sorted_names
        for name, value in entries:
            self.add(name, value)

    def add(self, name: str, value):
        """Register ``value`` under ``name``; returns ``value``."""
        if name in self:
            raise RuntimeError(f"{self.what} {name} is registered twice (a bug of the harness, not of the input)")
        self[name] = value
        return value

    def register(self, *names: str) -> Callable:
        """Decorator: register the decorated object under each of ``names``."""

        def decorate(value):
            for name in names:
                self.add(name, value)
            return value

        return decorate

    def names(self) -> list[str]:
        """The registered names, sorted or in the order of registration."""
        return sorted(self) if self.sorted_names else list(self)

    def lookup(self, name: str):
        """The object registered under ``name``; the registry's error, naming the known ones, otherwise."""
        if name not in self:
            raise self.error(f"unknown {self.what} {name!r}; known: {', '.join(self.names())}")
        return self[name]
