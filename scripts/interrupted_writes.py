"""How often a Ctrl-C at a random moment of a run's MLflow writes leaves the run unclosed.

Each attempt opens a run on a fresh SQLite store's experiment, logs metrics and tags in a loop, and
gets a SIGINT after a random 0.05-0.4 s; a failure is any error other than the KeyboardInterrupt itself
(before recsys.interrupts: "database is locked" when marking the run KILLED).

    python scripts/interrupted_writes.py --attempts 60            # as shipped
    python scripts/interrupted_writes.py --attempts 60 --no-defer # store writes interruptible again
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import tempfile
import threading

import recsys.interrupts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=60)
    parser.add_argument("--no-defer", action="store_true", help="let interrupts cut store writes (the old behaviour)")
    args = parser.parse_args()
    if args.no_defer:
        recsys.interrupts._defer = lambda: {}
    from recsys.tracking.run import TrackedRun

    uri = f"sqlite:///{tempfile.mkdtemp(prefix='recsys-interrupts-')}/mlflow.db"
    failures = []
    for attempt in range(args.attempts):
        run = TrackedRun(uri, "interrupted-writes", f"attempt-{attempt}")
        threading.Timer(random.uniform(0.05, 0.4), os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            with run:
                step = 0
                while True:
                    run.log_metrics({"a": 1.0, "b": 2.0}, step)
                    run.set_tags({"step": str(step)})
                    step += 1
        except KeyboardInterrupt:
            pass
        except BaseException as error:  # noqa: BLE001 - any other outcome is the failure counted
            failures.append(f"attempt {attempt}: {type(error).__name__}: {str(error).splitlines()[0][:120]}")
    print("\n".join(failures))
    print(f"{len(failures)} of {args.attempts} interrupted runs failed to close")


if __name__ == "__main__":
    main()
