"""How often a Ctrl-C at a random moment of a run's MLflow writes leaves the run unclosed.

Each attempt opens a run on a fresh SQLite store's experiment, logs metrics and tags in a loop, and
gets a SIGINT after a random 0.05-0.4 s. It counts the runs left RUNNING and the errors other than
the KeyboardInterrupt: before recsys.interrupts, "database is locked" when marking the run KILLED, or
an interrupt lost (writing on 5 s after it was sent).

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
import time

import recsys.interrupts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=60)
    parser.add_argument("--no-defer", action="store_true", help="let interrupts cut store writes (the old behaviour)")
    args = parser.parse_args()
    if args.no_defer:
        recsys.interrupts._defer = lambda: {}
    from recsys.tracking.run import TrackedRun

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tempfile.mkdtemp(prefix='recsys-interrupts-')}/mlflow.db"
    failures = []
    for attempt in range(args.attempts):
        sent = threading.Event()

        def interrupt() -> None:
            sent.set()
            os.kill(os.getpid(), signal.SIGINT)

        try:
            run = TrackedRun(uri, "interrupted-writes", f"attempt-{attempt}")
            threading.Timer(random.uniform(0.05, 0.4), interrupt).start()
            with run:
                step, waited = 0, time.monotonic()
                while True:
                    run.log_metrics({"a": 1.0, "b": 2.0}, step)
                    run.set_tags({"step": str(step)})
                    step += 1
                    if not sent.is_set():
                        waited = time.monotonic()
                    elif time.monotonic() - waited > 5:
                        raise TimeoutError("the interrupt was lost")
        except KeyboardInterrupt:
            pass
        except BaseException as error:  # noqa: BLE001 - any other outcome is a failure
            failures.append(f"attempt {attempt}: {type(error).__name__}: {str(error).splitlines()[0][:120]}")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("interrupted-writes").experiment_id
    left = client.search_runs([experiment], "attributes.status = 'RUNNING'")
    print("\n".join(failures))
    print(f"{len(left)} of {args.attempts} interrupted runs left RUNNING; {len(failures)} errors other than the interrupt")


if __name__ == "__main__":
    main()
