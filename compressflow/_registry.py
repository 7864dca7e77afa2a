"""One generic name → object registry, reused for stages, models, datasets and losses."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that is not in a registry; the message lists the valid choices."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class Registry(Generic[T]):
    """A named collection of objects registered with a decorator.

    Parameters
    ----------
    kind : str
        What the registry holds (``"model"``, ``"stage"``, ...); used in error messages.

    Examples
    --------
    >>> MODELS = Registry("model")
    >>> @MODELS.register
    ... def tiny(num_classes=10):
    ...     return num_classes
    >>> MODELS.get("tiny")(3)
    3
    >>> MODELS.list()
    ['tiny']
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, obj: T | None = None, *, name: str | None = None):
        """Register ``obj`` under ``name`` (default: its ``__name__``); usable as a decorator.

        Raises
        ------
        ValueError
            If the name is already taken.
        """

        def add(item: T) -> T:
            key = name or getattr(item, "__name__", None)
            if not key:
                raise ValueError(f"cannot register {item!r} as a {self.kind}: give it a name")
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._items[key] = item
            return item

        if obj is None:
            return add
        return add(obj)

    def get(self, name: str) -> T:
        """Return the object registered as ``name``.

        Raises
        ------
        UnknownNameError
            If ``name`` is not registered; the message lists the valid names.
        """
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: object) -> str:
        return f"unknown {self.kind} {name!r}; valid choices: {', '.join(self.list())}"

    def list(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.list()})"

