"""Ctrl-C and SIGTERM held until a store write is whole (recsys.interrupts), and the MLflow run that an
interrupt inside a write used to leave RUNNING behind a locked SQLite store."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import sqlalchemy
from mlflow.tracking import MlflowClient

from recsys.interrupts import Deferring, deferred_interrupts, interruptible, raise_interrupt
from recsys.tracking.run import TrackedRun


def test_an_interrupt_inside_the_block_is_raised_when_it_ends() -> None:
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            signal.raise_signal(signal.SIGINT)
            reached.append("after the signal")
    assert reached == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_nested_blocks_deliver_once_at_the_outermost_end() -> None:
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            with deferred_interrupts():
                signal.raise_signal(signal.SIGINT)
            reached.append("after the inner block")
    assert reached == ["after the inner block"]
    with deferred_interrupts():  # nothing is left pending
        pass


def test_interruptible_acts_at_once_and_then_defers_again() -> None:
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            try:
                with interruptible():
                    signal.raise_signal(signal.SIGINT)
                    reached.append("not reached")
            except KeyboardInterrupt:
                reached.append("raised inside")
            signal.raise_signal(signal.SIGINT)  # deferred again
            reached.append("after the second signal")
    assert reached == ["raised inside", "after the second signal"]


def test_an_interrupt_recorded_before_interruptible_is_raised_on_entry() -> None:
    reached = []
    with deferred_interrupts():
        signal.raise_signal(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            with interruptible():
                reached.append("not reached")
    assert reached == []


def test_sigterm_under_the_cli_handler_is_deferred_and_other_handlers_are_left_alone() -> None:
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            with deferred_interrupts():
                signal.raise_signal(signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) is raise_interrupt
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with deferred_interrupts():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            signal.raise_signal(signal.SIGINT)  # ignored, as before
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def test_deferring_runs_each_method_call_whole() -> None:
    class Store:
        size = 3

        def write(self, value: int) -> int:
            signal.raise_signal(signal.SIGINT)
            return value + 1

    store = Deferring(Store())
    done = []
    with pytest.raises(KeyboardInterrupt):
        done.append(store.write(1))  # the write returns; the interrupt follows it
    assert done == [] and store.size == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_run_interrupted_inside_a_metric_write_ends_killed_with_the_write_done(tmp_path: Path) -> None:
    """Ctrl-C between the metric INSERT and its COMMIT: the run used to stay RUNNING ("database is
    locked" on the status update) about once in a dozen random interrupts."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run = TrackedRun(uri, "e", "r")
    fired = []

    def interrupt_inside_the_transaction(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO METRICS") and not fired:
            fired.append(statement)
            signal.raise_signal(signal.SIGINT)

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "after_cursor_execute", interrupt_inside_the_transaction)
    try:
        with pytest.raises(KeyboardInterrupt):
            with run:
                run.log_metrics({"val/recall@20": 0.25}, step=0)
                pytest.fail("the interrupt was not raised after the write")
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "after_cursor_execute", interrupt_inside_the_transaction)
    assert fired
    stored = MlflowClient(uri).get_run(run.run_id)
    assert stored.info.status == "KILLED"
    assert stored.data.metrics == {"val/recall_at_20": 0.25}


def test_a_run_interrupted_while_it_is_created_ends_killed(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run = TrackedRun(uri, "e", "r")

    def interrupt_the_creation(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO RUNS"):
            signal.raise_signal(signal.SIGINT)

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "after_cursor_execute", interrupt_the_creation)
    try:
        with pytest.raises(KeyboardInterrupt):
            with run:
                pytest.fail("the block of an interrupted run ran")
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "after_cursor_execute", interrupt_the_creation)
    assert run.run_id
    assert MlflowClient(uri).get_run(run.run_id).info.status == "KILLED"
