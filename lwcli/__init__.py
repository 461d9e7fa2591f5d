"""lw: a learnware market toolchain.

Importing this package does no work: no torch import, no directories created.
The library API lives in :mod:`lwcli.api`.
"""

__version__ = "0.1.0"
