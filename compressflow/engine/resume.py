"""The resume plan: which tasks of a graph are already done, decided once, on the client.

Every persisted record the run could reuse is read and checked here (schema, key, digest,
metrics, its artifact present and matching its sha256), once per run. A good one is handed
to the graph, which then does not submit its task and gives its record to the tasks
downstream; workers never re-read records. A bad one is moved aside and its task runs again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from compressflow.engine.node import Node
from compressflow.rundir import RunDir
from compressflow.rundir.records import LedgerEntry, RecordError

log = logging.getLogger("compressflow.engine.resume")

__all__ = ["plan_resume"]


def plan_resume(nodes: Iterable[Node], run: RunDir) -> dict[str, LedgerEntry]:
    """Task key → its finished record, for every task of ``nodes`` that needs no recomputing.

    A record is reused when :meth:`~compressflow.rundir.RunDir.read_record` trusts it (hash of
    its artifact checked) and it finished ``ok``; one that a downstream task takes an artifact
    from must have one. A bad record is not reused: it is moved, with its artifact if that
    changed, to ``OUT/rejected/<key>/`` (nothing is deleted), the reason is printed once,
    here (also with ``--quiet``: it is a warning, not progress), and the task runs again. A
    failed record is left in place and its task runs again.

    The returned records are labelled as the first node of their key (the same work may have
    been reached from another spec: another stage name, a seed given as a parameter rather
    than a sweep axis).
    """
    first: dict[str, Node] = {}
    for node in nodes:
        first.setdefault(node.key, node)
    consumed = {k for node in first.values() for k in node.needs.values() if isinstance(k, str)}
    reused: dict[str, LedgerEntry] = {}
    for key, node in first.items():
        path = run.record(key)
        try:
            done = run.read_record(key)
        except FileNotFoundError:
            continue
        except RecordError as exc:
            why = str(exc)
        else:
            if not done.ok:
                continue
            if not (key in consumed and (done.record is None or done.record.artifact is None)):
                done.stage, done.point = node.stage, dict(node.point)
                reused[key] = done
                continue
            why = "has no artifact, but a downstream stage needs one"
        moved = run.reject(key, why)
        # a warning, shown also under --quiet / show_progress=False (the runner's console handler)
        log.warning(f"compressflow: warning: record {str(path)!r} of stage {node.stage!r} is not reused ({why}); "
                    f"the task runs again; the old record is kept in {str(moved)!r}")
    return reused
