"""The lab's extension points: a :class:`Registry` maps a name to a frozen spec.

Tuners (:data:`cdat_core.lab.tuners.TUNERS`), base optimizers
(:data:`cdat_core.lab.tuners.BASES`), problems (:data:`cdat_core.lab.problems.PROBLEMS`) and
claims (:data:`cdat_core.lab.claims.CLAIMS`) are registries: adding one is one
``REGISTRY.register(Spec(...))`` (or one ``@claim(...)``) next to the thing it describes, and
the code that uses them looks names up instead of branching on them. A registry is a live,
read-only :class:`~collections.abc.Mapping` (name -> spec, in registration order);
:meth:`Registry.scoped` undoes registrations, so a test can add a toy entry and leave the
registry as it found it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

__all__ = ["FieldView", "Registry"]

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Name -> spec, in registration order; names are unique.

    Args:
      kind: what the entries are (``"tuner"``, ``"problem"``, ...), for error messages.
      key: the spec's name (default: its ``name`` attribute).

    Example:
      >>> from cdat_core.lab.registry import Registry
      >>> colors = Registry("color", key=str.lower)
      >>> colors.register("Red"), list(colors), colors["red"]
      ('Red', ['red'], 'Red')
      >>> with colors.scoped():
      ...     _ = colors.register("Blue")
      ...     len(colors)
      2
      >>> colors
      Registry('color', ('red',))
    """

    def __init__(self, kind: str, *, key: Callable[[T], str] | None = None) -> None:
        self.kind = kind
        self._key: Callable[[T], str] = key or (lambda spec: spec.name)  # type: ignore[attr-defined]
        self._entries: dict[str, T] = {}

    def register(self, spec: T) -> T:
        """Add ``spec`` under its name.

        Args:
          spec: the entry.

        Returns:
          ``spec`` (so ``register`` can be used as a decorator).

        Raises:
          ValueError: the name is already registered.
        """
        name = self._key(spec)
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = spec
        return spec

    def unregister(self, name: str) -> T:
        """Remove and return the entry ``name`` (``KeyError`` when absent)."""
        return self._entries.pop(name)

    def lookup(self, name: str) -> T:
        """The entry ``name``, or a ``ValueError`` that lists the registered names.

        Example:
          >>> from cdat_core.lab.registry import Registry
          >>> Registry("tuner").lookup("nope")
          Traceback (most recent call last):
          ...
          ValueError: unknown tuner 'nope'; choose one of ()
        """
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; choose one of {tuple(self._entries)}"
            ) from None

    @contextlib.contextmanager
    def scoped(self) -> Iterator[Registry[T]]:
        """Within the block, registrations are temporary: the entries are restored on exit."""
        saved = dict(self._entries)
        try:
            yield self
        finally:
            self._entries.clear()
            self._entries.update(saved)

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {tuple(self._entries)})"


S = TypeVar("S")


class FieldView(Mapping[str, T], Generic[S, T]):
    """A live read-only view ``name -> field(spec)`` of a registry (for older aliases).

    Example:
      >>> from cdat_core.lab.registry import FieldView, Registry
      >>> words = Registry("word", key=str.lower)
      >>> lengths = FieldView(words, len)
      >>> _ = words.register("Edge")
      >>> dict(lengths)
      {'edge': 4}
    """

    def __init__(self, registry: Mapping[str, S], field: Callable[[S], T]) -> None:
        self._registry, self._field = registry, field

    def __getitem__(self, name: str) -> T:
        return self._field(self._registry[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._registry)

    def __len__(self) -> int:
        return len(self._registry)

    def __repr__(self) -> str:
        return repr(dict(self))
