"""One generic name → object registry, reused for ops, models, datasets, losses, blocks and
summaries: one class, whatever it holds (no copy per kind).

An entry may carry *facts* the registry declares with their defaults (an op's code
``version`` and spec-time ``check``, a model's or dataset's ``task``), given at registration
and read with :meth:`Registry.info`; :meth:`Registry.list` filters on them."""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from compressflow._code_digest import code_digest, is_builtin
from compressflow.errors import did_you_mean

T = TypeVar("T")

__all__ = ["OpRegistry", "Registry", "UnknownNameError"]


class UnknownNameError(KeyError):
    """A name that is not in a registry; the message lists the valid choices."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class Registry(Generic[T]):
    """A named collection of objects registered with a decorator.

    Parameters
    ----------
    kind : str
        What the registry holds (``"model"``, ``"op"``, ...); used in error messages.
    loader : callable, optional
        Called before the first lookup (``get``, ``info``, ``list``, ``in``, iteration, ``len``)
        until it returns True: it imports the modules that register the built-in and plugin
        names (:func:`compressflow.registries.load`), so nothing is imported for its side
        effects until a name is needed. Registering never calls it.
    facts : mapping, optional
        The facts an entry may be registered with, and their defaults
        (``{"task": "classification"}``): ``register(fn, task="detection")``.

    Examples
    --------
    >>> MODELS = Registry("model", facts={"task": "classification"})
    >>> @MODELS.register
    ... def tiny(num_classes=10):
    ...     return num_classes
    >>> @MODELS.register(task="detection")
    ... def boxes(num_classes=10):
    ...     return num_classes
    >>> MODELS.get("tiny")(3), MODELS.info("boxes")["task"]
    (3, 'detection')
    >>> MODELS.list(), MODELS.list(task="classification")
    (['boxes', 'tiny'], ['tiny'])
    """

    def __init__(self, kind: str, *, loader: Callable[[], bool] | None = None,
                 facts: Mapping[str, Any] | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._info: dict[str, dict[str, Any]] = {}
        self._facts = dict(facts or {})
        self._loader = loader

    def _load(self) -> None:
        # False while the load is still under way in this thread (a module it imports may
        # look a name up): keep asking until it has finished
        if self._loader is not None and self._loader():
            self._loader = None

    def register(self, obj: T | None = None, *, name: str | None = None, **facts: Any) -> Any:
        """Register ``obj`` under ``name`` (default: its ``__name__``) with ``facts``; usable as
        a decorator, bare or called.

        Raises
        ------
        ValueError
            If the name is already taken, or a fact's value is not valid.
        TypeError
            If a fact is not one this registry declares.
        """
        unknown = sorted(set(facts) - set(self._facts))
        if unknown:
            valid = ", ".join(self._facts) or "none"
            raise TypeError(f"a {self.kind} is registered with no fact {unknown[0]!r}; facts of a {self.kind}: {valid}")
        self._check_facts(facts)

        def add(item: T) -> T:
            key = self._name_of(item, name)
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._items[key] = item
            self._info[key] = {**self._facts, **facts, **self._derived(item)}
            return item

        if obj is None:
            return add
        return add(obj)

    def _check_facts(self, facts: Mapping[str, Any]) -> None:
        """Refuse bad fact values before anything is registered (a subclass's rules)."""

    def forget(self, module: str) -> list[str]:
        """Unregister every name whose object is defined in ``module`` or one of its submodules
        (a plugin about to be imported again, edited); return those names.

        Examples
        --------
        >>> reg = Registry("thing")
        >>> _ = reg.register(len, name="size"), reg.register(Registry, name="registry")
        >>> reg.forget("compressflow"), list(reg)
        (['registry'], ['size'])
        """
        def inside(item: Any) -> bool:
            origin = getattr(item, "__module__", None) or ""
            return origin == module or origin.startswith(module + ".")

        gone = [key for key, item in self._items.items() if inside(item)]
        for key in gone:
            del self._items[key], self._info[key]
        return gone

    def _derived(self, item: T) -> dict[str, Any]:
        """Facts read off ``item`` itself when it registers (a subclass's), not given."""
        return {}

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

    def info(self, name: str) -> Mapping[str, Any]:
        """The facts ``name`` was registered with (defaults filled in), read-only.

        Raises
        ------
        UnknownNameError
            If ``name`` is not registered.
        """
        self.get(name)
        return types.MappingProxyType(self._info[name])

    def unknown_message(self, name: object, **where: Any) -> str:
        """Why ``name`` is refused where an entry with facts ``where`` is asked for: it is
        unknown, or registered with other facts; lists the valid choices and the closest one."""
        valid = self.list(**where)
        self._load()
        if name in self._items and where:
            facts = ", ".join(f"{k} {self._info[name].get(k)!r}" for k in where)
            return f"{self.kind} {name!r} has {facts}; valid choices here: {', '.join(valid) or 'none'}"
        return f"unknown {self.kind} {name!r}{did_you_mean(name, valid)}; valid choices: {', '.join(valid)}"

    def list(self, **where: Any) -> list[str]:
        """Sorted registered names; with ``where``, those whose facts have those values."""
        self._load()
        return sorted(k for k in self._items if all(self._info[k].get(f) == v for f, v in where.items()))

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
    """The op registry: a :class:`Registry` whose entries carry the op's code ``version``, its
    checks, the kind of ``data`` it needs and the parameters it ``moved``.

    * ``version`` (default 1) is part of every task key of the op (see
      :mod:`compressflow.engine.keys`): bump it when a change to the op's code changes what it
      computes, and every finished task of that op, and everything downstream of it, runs
      again on the next run; other ops' records are still reused.
    * ``key_source`` (default True) puts the digest of a *user* op's source in its task keys
      (:func:`compressflow._code_digest.code_digest`: the whole file that defines it, or a
      ``__main__`` function's own source), so an edited op, and what depends on it, runs
      again by itself; a built-in op's keys hold its ``version`` only. ``key_source=False``
      keeps the keys version-only (an edit to a comment reruns nothing): finished tasks are
      then reused after an edit, and the run says so, one warning line per op.
    * ``check(spec, stage_name)`` runs when a spec is loaded, after every stage's own
      parameters validated; it looks across stages and raises
      :class:`~compressflow.errors.SpecError` or warns (:class:`~compressflow.errors.SpecWarning`).
      It sees only the spec and must not import torch: loading a spec stays cheap.
    * ``model_check(spec, stage_name)`` runs when the study is submitted, before any task:
      a check that must build a model (on the meta device) to know, e.g., its layer names.
    * ``data``: ``"classification"`` (default), ``"detection"`` or None (the op reads no
      data): the spec's dataset must be of that task.
    * ``moved``: former parameter → how to update a spec that still sets it.

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
    >>> OPS.code("train") is None  # defined in compressflow (this docstring): a built-in
    True
    """

    FACTS: Mapping[str, Any] = {"version": 1, "check": None, "model_check": None, "data": "classification",
                                "moved": {}, "key_source": True}

    def __init__(self, kind: str, *, loader: Callable[[], bool] | None = None) -> None:
        super().__init__(kind, loader=loader, facts=self.FACTS)

    def _check_facts(self, facts: Mapping[str, Any]) -> None:
        version = facts.get("version", 1)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"{self.kind} version must be an integer >= 1, got {version!r}")
        for hook in ("check", "model_check"):
            if facts.get(hook) is not None and not callable(facts[hook]):
                raise TypeError(f"{self.kind} {hook} must be a function {hook}(spec, stage_name), got {facts[hook]!r}")
        if facts.get("data", "classification") not in ("classification", "detection", None):
            raise ValueError(f"{self.kind} data must be 'classification', 'detection' or None, got {facts['data']!r}")
        if not isinstance(facts.get("moved", {}), Mapping):
            raise TypeError(f"{self.kind} moved must map a former parameter to how to update it, got {facts['moved']!r}")
        if not isinstance(facts.get("key_source", True), bool):
            raise TypeError(f"{self.kind} key_source must be True or False, got {facts['key_source']!r}")

    def _derived(self, item: T) -> dict[str, Any]:
        # the source as this process imported it, read now, while the module is being executed
        return {"code": None if is_builtin(item) else code_digest(item)}  # type: ignore[arg-type]

    def code(self, name: str) -> str | None:
        """The hex SHA-256 of ``name``'s source as this process imported it, read when it
        registered (:func:`compressflow._code_digest.code_digest`); None for a built-in op, or
        one whose source could not be read.

        Raises
        ------
        UnknownNameError
            If ``name`` is not registered.
        """
        return self.info(name).get("code")

    def version(self, name: str) -> int:
        """The code version ``name`` was registered with (1 unless it said otherwise).

        Raises
        ------
        UnknownNameError
            If ``name`` is not registered.
        """
        return int(self.info(name)["version"])

    def check(self, name: str) -> Callable[[Any, str], None]:
        """The spec-time check ``name`` was registered with, as ``check(spec, stage_name)``;
        one that does nothing when it was registered without.

        Raises
        ------
        UnknownNameError
            If ``name`` is not registered.
        """
        return self.info(name)["check"] or _no_check

    def model_check(self, name: str) -> Callable[[Any, str], None]:
        """The submit-time check ``name`` was registered with (``model_check``), or one that
        does nothing.

        Raises
        ------
        UnknownNameError
            If ``name`` is not registered.
        """
        return self.info(name)["model_check"] or _no_check


def _no_check(spec: Any, name: str) -> None:
    """The check of an op registered without one."""
