"""The former name of :mod:`lwcli.engine.kernel`, kept because ``lwcli.api``,
``lwcli.specfile``, ``lwcli.market.store`` and some tests and benchmarks import from it."""

from .kernel import (CHUNK_ELEMENTS, KernelMetric, fit_metric, gram, kernel_inner,  # noqa: F401
                     mmd2, mmd2_numpy, sqdist)

__all__ = ["KernelMetric", "fit_metric", "CHUNK_ELEMENTS", "sqdist", "gram", "kernel_inner",
           "mmd2", "mmd2_numpy"]
