"""A warm launcher of real ``lw`` processes, for the tests that kill lw (``LW_CRASH_AT``, random
SIGKILLs) or inject write faults into it (``LW_FAIL_AT``).

Each command runs in a process of its own, forked from this one, which has already imported
lw's modules and started lw's fork server (:func:`lwcli.market.forkserver.warm_up`): a command
starts in milliseconds instead of the seconds a fresh interpreter spends on imports, and its
models run in workers of the shared server. The child runs the console script's own
``lwcli.cli.main:main`` in a session of its own, with the command's environment, working
directory, stdin from /dev/null and stdout / stderr into the given files; a crash point or a
kill ends only the child, whose per-process state (crash-point counters) starts empty.

Protocol, one JSON object per line: in ``{"argv", "env", "cwd", "out", "err"}``; out
``{"pid"}`` once the child runs, then ``{"status"}`` (``os.waitstatus_to_exitcode``) when it
has ended. One command at a time. Only the tests import this file's helpers
(``conftest.spawn_lw``); what needs the installed entry point (exit 141, imports, ``--help``)
still runs the ``lw`` script.
"""

from __future__ import annotations

import json
import os
import sys

#: Imported before any fork, so that no command pays for them (nothing here starts a thread).
WARM = ("numpy", "scipy", "pandas", "torch", "sklearn.base", "lwcli.cli.main", "lwcli.api",
        "lwcli.api.submit", "lwcli.api.market", "lwcli.api.search", "lwcli.api.anchors",
        "lwcli.market.store", "lwcli.market.index", "lwcli.market.anchors",
        "lwcli.market.checks", "lwcli.market.verify", "lwcli.market.package")


def _child(req: dict) -> int:
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, path in ((1, req["out"]), (2, req["err"])):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    sys.argv = ["lw", *req["argv"]]
    from lwcli.cli.main import main

    try:
        main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def serve() -> None:
    import importlib

    for name in WARM:
        importlib.import_module(name)
    from lwcli.market.forkserver import exit_after, warm_up

    warm_up()
    out = sys.stdout
    for line in sys.stdin:
        req = json.loads(line)
        out.flush()
        pid = os.fork()
        if pid == 0:
            exit_after(lambda: _child(req))
        out.write(json.dumps({"pid": pid}) + "\n")
        out.flush()
        _, status = os.waitpid(pid, 0)
        out.write(json.dumps({"status": os.waitstatus_to_exitcode(status)}) + "\n")
        out.flush()


if __name__ == "__main__":
    serve()
