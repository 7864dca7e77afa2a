"""One generic name → object registry, reused for ops, models, datasets and losses."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

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
    loader : callable, optional
        Called before the first lookup (``get``, ``list``, ``in``, iteration, ``len``) until
        it returns True: it imports the modules that register the built-in and plugin names
        (:func:`compressflow.plugins.load`), so nothing is imported for its side effects
        until a name is needed. Registering never calls it.

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

    def __init__(self, kind: str, *, loader: Callable[[], bool] | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._loader = loader

    def _load(self) -> None:
        # False while the load is still under way in this thread (a module it imports may
        # look a name up): keep asking until it has finished
        if self._loader is not None and self._loader():
            self._loader = None

    def register(self, obj: T | None = None, *, name: str | None = None):
        """Register ``obj`` under ``name`` (default: its ``__name__``); usable as a decorator.

        Raises
        ------
        ValueError
            If the name is already taken.
        """

        def add(item: T) -> T:
            key = self._name_of(item, name)
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._items[key] = item
            return item

        if obj is None:
            return add
        return add(obj)

    def _name_of(self, item: T, name: str | None) -> str:
        """The name ``item`` registers under: ``name``, else its ``__name__``."""
        key = name or getattr(item, "__name__", None)
        if not key:
            raise ValueError(f"cannot register {item!r} as a {self.kind}: give it a name")
        return key

    def get(self, name: str) -> T:
        """Return the object registered as ``name``.

        Raises
        ------
        UnknownNameError
            If ``name`` is not registered; the message lists the valid names.
        """
        self._load()
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: object) -> str:
        return f"unknown {self.kind} {name!r}; valid choices: {', '.join(self.list())}"

    def list(self) -> list[str]:
        """Sorted registered names."""
        self._load()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        self._load()
        return len(self._items)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kind!r}, {self.list()})"


class OpRegistry(Registry[T]):
    """The op registry: a :class:`Registry` whose entries also carry a code ``version`` and
    an optional spec-time ``check``.

    An op's version is part of every task key of that op (see :mod:`compressflow.engine.keys`):
    bump it when a change to the op's code changes what it computes, and every finished
    task of that op, and everything downstream of it, runs again on the next run; other
    ops' records are still reused. Unchanged ops keep version 1.

    An op's check, ``check(spec, stage_name)``, runs when a spec is loaded, after every
    stage's own parameters validated: it looks across stages (e.g. that a layer name exists
    in the upstream model) and raises :class:`~compressflow.errors.SpecError` or warns
    (:class:`~compressflow.errors.SpecWarning`) before any task runs.

    Examples
    --------
    >>> OPS = OpRegistry("op")
    >>> @OPS.register
    ... def train(ctx):
    ...     pass
    >>> def at_most_one_stage(spec, name):
    ...     pass
    >>> @OPS.register(version=2, check=at_most_one_stage)
    ... def prune(ctx):
    ...     pass
    >>> OPS.version("train"), OPS.version("prune")
    (1, 2)
    >>> OPS.check("prune") is at_most_one_stage
    True
    """

    def __init__(self, kind: str, *, loader: Callable[[], bool] | None = None) -> None:
        super().__init__(kind, loader=loader)
        self._versions: dict[str, int] = {}
        self._checks: dict[str, Callable[[Any, str], None]] = {}

    def register(self, obj: T | None = None, *, name: str | None = None, version: int = 1,
                 check: Callable[[Any, str], None] | None = None):
        """Register ``obj`` as :meth:`Registry.register` does, with its code ``version`` and
        its spec-time ``check`` (``check(spec, stage_name)``; none by default).

        Raises
        ------
        ValueError
            If the name is taken or ``version`` is not an integer >= 1.
        TypeError
            If ``check`` is given and is not callable.
        """
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"{self.kind} version must be an integer >= 1, got {version!r}")
        if check is not None and not callable(check):
            raise TypeError(f"{self.kind} check must be a function check(spec, stage_name), got {check!r}")

        def add(item: T) -> T:
            Registry.register(self, item, name=name)
            key = self._name_of(item, name)
            self._versions[key] = version
            if check is not None:
                self._checks[key] = check
            return item

        if obj is None:
            return add
        return add(obj)

    def version(self, name: str) -> int:
        """The code version ``name`` was registered with (1 unless it said otherwise).

        Raises
        ------
        UnknownNameError
            If ``name`` is not registered.
        """
        self.get(name)
        return self._versions[name]

    def check(self, name: str) -> Callable[[Any, str], None]:
        """The spec-time check ``name`` was registered with, as ``check(spec, stage_name)``;
        one that does nothing when it was registered without.

        Raises
        ------
        UnknownNameError
            If ``name`` is not registered.
        """
        self.get(name)
        return self._checks.get(name, _no_check)


def _no_check(spec: Any, name: str) -> None:
    """The check of an op registered without one."""
