"""The worker plugin lw registers on a Dask cluster it runs batch work on (imported only
then: it needs ``distributed``)."""

from __future__ import annotations

from distributed.diagnostics.plugin import WorkerPlugin


class MallocTuning(WorkerPlugin):
    """On each worker, now and as workers (re)start: glibc's malloc keeps large freed blocks
    (:func:`lwcli.executor.tune_malloc`)."""

    name = "lw-malloc-tuning"

    def setup(self, worker) -> None:
        from .executor import tune_malloc

        tune_malloc()
