"""The ``lw`` command line: thin typer commands over :mod:`lwcli.api`."""
