"""The engine: a spec flows one way through it — load and validate (:mod:`.spec`), expand to
tasks (:mod:`.graph`, keyed by :mod:`.keys`), plan and execute on a Dask cluster
(:mod:`.runner`, :mod:`.execute`, :mod:`.scheduling`, :mod:`.cluster`), and persist each task's
:class:`~compressflow.rundir.records.LedgerEntry` in the run directory."""

__all__: list[str] = []
