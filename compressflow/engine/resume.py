"""The resume plan: which tasks of a graph are already done, decided once, on the client.

Every persisted record the run could reuse is read and checked here (schema, key, digest,
metrics, its artifact present and matching its sha256), once per run. A good one is handed
to the graph, which then does not submit its task and gives its record to the tasks
downstream; workers never re-read records. A bad one is moved aside and its task runs again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from compressflow.engine.keys import source_digest
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

    A reused record of a user op whose source has changed since (its ``code`` is not the
    digest of the source now, :func:`~compressflow.engine.keys.source_digest`: an op registered
    with ``key_source=False``, whose keys do not hold it) is still reused, and one warning line
    per op says so and how to run its tasks again. A record without ``code`` (a built-in op's,
    or one written before records kept it) is reused without one.
    """
    first: dict[str, Node] = {}
    for node in nodes:
        first.setdefault(node.key, node)
    consumed = {k for node in first.values() for k in node.needs.values() if isinstance(k, str)}
    reused: dict[str, LedgerEntry] = {}
    sources: dict[str, str] = {}  # op -> the digest of its source now (a record's own where unreadable)
    changed: dict[str, int] = {}  # op -> reused records of its earlier source
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
                if done.code:
                    if node.op not in sources:  # unreadable now: nothing to compare with
                        sources[node.op] = source_digest(node.op) or done.code
                    if done.code != sources[node.op]:
                        changed[node.op] = changed.get(node.op, 0) + 1
                continue
            why = "has no artifact, but a downstream stage needs one"
        moved = run.reject(key, why)
        # a warning, shown also under --quiet / show_progress=False (the runner's console handler)
        log.warning(f"compressflow: warning: record {str(path)!r} of stage {node.stage!r} is not reused ({why}); "
                    f"the task runs again; the old record is kept in {str(moved)!r}")
    for op, n in changed.items():
        log.warning(f"compressflow: warning: op {op!r}: its source changed since {n} finished task(s) were "
                    f"recorded; they are reused as they are — bump version= in @OPS.register (or delete their "
                    f"records) to run them again")
    return reused
