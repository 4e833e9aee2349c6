"""A fork server for the crash-safety tests: imports lineclear (and PyTorch) once, then forks one child per
command, so a test can SIGKILL many real ``lineclear`` processes without paying ~4 s of imports each.

Protocol, one JSON object per line on stdin, one answer per line on stdout:

* ``{"run": [args...], "out": path, "err": path, "cwd": dir}`` → ``{"pid": n}``: a child runs
  ``lineclear args...`` with its stdout and stderr in those files;
* ``{"wait": pid}`` → ``{"status": code}``: the child's exit code, or ``-signal`` when it was killed.

The parent never runs PyTorch or OpenCV code itself, so the children start with clean thread pools.
"""

from __future__ import annotations

import json
import os
import sys


def _child(req: dict) -> None:
    os.chdir(req["cwd"])
    for fd, path in ((1, req["out"]), (2, req["err"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    from lineclear.cli.main import run

    sys.argv = ["lineclear", *req["run"]]
    code = 0
    try:
        run(req["run"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - report like an uncaught exception would
        import traceback

        traceback.print_exc()
        code = 99
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    import lineclear.cli.main
    import lineclear.models.template  # noqa: F401 - the model the tests train
    import lineclear.watch  # noqa: F401

    lineclear.cli.main._load_commands()  # every command's imports, once

    for line in sys.stdin:
        req = json.loads(line)
        if "run" in req:
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                _child(req)
            answer = {"pid": pid}
        else:
            _, status = os.waitpid(req["wait"], 0)
            answer = {"status": os.waitstatus_to_exitcode(status)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
