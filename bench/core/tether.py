"""`python -m bench.core.tether CMD …`: run a program that is not ours (Locust) so that it dies with the structbench
process that started it, even when that one is SIGKILLed. Started by `processes.tethered()`: this process leads its
own session, watches the lifeline (bench.core.processes) and, once the parent is gone, SIGKILLs its group — CMD
and whatever CMD started. Otherwise it waits for CMD and ends as CMD did (the same exit code, or the same signal)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from bench.core.processes import watch_lifeline


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m bench.core.tether CMD [ARG …]", file=sys.stderr)
        return 2
    watch_lifeline()
    child = subprocess.Popen(argv)
    for sig in (signal.SIGTERM, signal.SIGINT):  # a signal to this pid alone reaches CMD too
        signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
    code = child.wait()
    if code < 0:  # end by the same signal, so the caller reads what happened to CMD
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # those two have no handler to reset
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
