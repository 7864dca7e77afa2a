"""The report's sections, each tied to the op families it reports on.

A section is ``fn(tree, folder) -> Markdown text or None`` (None: nothing to show; PNGs it
draws go to ``folder``). It is registered in :data:`SECTIONS` with the ops whose stages it
reports on, and the page shows it only when one of those ops ran (is in the ``/tasks``
ledger), so a run without a ``prune`` stage has no pruning section and adding a family's
section never touches the page code.

Examples
--------
>>> from compressflow.report.sections import SECTIONS
>>> @SECTIONS.register(ops=("evaluate",), order=90)      # doctest: +SKIP
... def evaluations(tree, folder):
...     return "## Evaluations\\n\\n..."
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import xarray as xr

from compressflow._registry import Registry
from compressflow.errors import did_you_mean
from compressflow.registries import OPS

__all__ = ["SECTIONS", "Section", "SectionRegistry", "ops_present", "stage_groups"]

SectionFn = Callable[[xr.DataTree, Path], "str | None"]


@dataclass(frozen=True)
class Section:
    """A registered report section.

    Attributes
    ----------
    name : str
        The registry key (the function's name unless given).
    fn : callable
        ``fn(tree, folder) -> str | None``: the section's Markdown, or None when there is
        nothing to show.
    ops : tuple of str or None
        The ops whose stages it reports on; None: every run (it reads the ledger).
    order : int
        Place on the page, lower first (ties: by name).
    html_only : bool
        Shown on ``report.html`` only, not in ``report.md``.
    """

    name: str
    fn: SectionFn
    ops: tuple[str, ...] | None
    order: int
    html_only: bool = False

    def covers(self, ops: Iterable[str]) -> bool:
        """Whether the section has something to report on in a run whose ledger holds ``ops``."""
        return self.ops is None or not set(self.ops).isdisjoint(ops)


class SectionRegistry(Registry[Section]):
    """The report sections: a :class:`~compressflow._registry.Registry` of :class:`Section`
    whose :meth:`register` ties a function to the op families it reports on."""

    def register(self, fn: SectionFn | None = None, *, ops: Iterable[str] | None,  # type: ignore[override]  # ops is required
                 name: str | None = None, order: int = 50, html_only: bool = False):
        """Register ``fn`` as a section reporting on the stages of ``ops`` (None: every run);
        usable as a decorator, which returns ``fn`` unchanged.

        Raises
        ------
        ValueError
            If the name is taken, or an op in ``ops`` is not a registered op (the message
            lists the valid ones).
        """
        covered = None if ops is None else tuple(ops)

        def add(item: SectionFn) -> SectionFn:
            key = name or item.__name__
            for op in covered or ():
                if op not in OPS:
                    raise ValueError(f"{self.kind} {key!r}: ops: unknown op {op!r}{did_you_mean(op, OPS.list())}; "
                                     f"valid choices: {', '.join(OPS.list())}")
            Registry.register(self, Section(key, item, covered, order, html_only), name=key)
            return item

        if fn is None:
            return add
        return add(fn)

    def for_tree(self, tree: xr.DataTree) -> list[Section]:
        """The sections that cover an op of ``tree``'s ledger, in page order."""
        present = ops_present(tree)
        chosen = [self.get(n) for n in self if self.get(n).covers(present)]
        return sorted(chosen, key=lambda s: (s.order, s.name))


#: every report section; :mod:`compressflow.report` imports the built-in section modules
SECTIONS = SectionRegistry("report section")


def ops_present(tree: xr.DataTree) -> set[str]:
    """The ops of the tasks in ``tree``'s ``/tasks`` ledger."""
    return {str(op) for op in tree["tasks"]["op"].to_numpy()}


def stage_groups(tree: xr.DataTree, ops: Iterable[str]) -> list[tuple[str, xr.Dataset]]:
    """``(name, dataset)`` of every stage group of ``tree`` run by one of ``ops``, by name."""
    wanted = set(ops)
    groups = ((name, tree[name].to_dataset()) for name in sorted(tree.children))
    return [(name, ds) for name, ds in groups if ds.attrs.get("op") in wanted]
