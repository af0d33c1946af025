"""Session batches: left-padded windows, next-item targets, and seeded, deterministic DataModule batches."""

from __future__ import annotations

import numpy as np
import torch

from recsys.data.sessions import (
    SessionDataModule,
    SessionSplit,
    ShuffledSessions,
    last_events,
    next_item_pairs,
)
from tests.factories import rows_sessions


_sessions = rows_sessions


ROWS = [[0, 1, 2], [3], [4, 5, 6, 7, 8], [2, 2]]
SESSIONS = _sessions(ROWS, n_items=9)


def test_last_events_left_pads_and_truncates() -> None:
    padded = last_events(SESSIONS, max_len=4)
    # Item ids + 1; 0 is padding on the left; session 2 keeps its last 4 of 5 events.
    assert padded.dtype == torch.long
    assert padded.tolist() == [[0, 1, 2, 3], [0, 0, 0, 4], [6, 7, 8, 9], [0, 0, 3, 3]]
    assert last_events(SESSIONS, max_len=2, rows=torch.tensor([2, 0])).tolist() == [[8, 9], [2, 3]]


def test_next_item_pairs_are_zero_at_padding() -> None:
    inputs, targets = next_item_pairs(last_events(SESSIONS, max_len=4))
    assert inputs.tolist() == [[0, 1, 2], [0, 0, 0], [6, 7, 8], [0, 0, 3]]
    assert targets.tolist() == [[0, 2, 3], [0, 0, 0], [7, 8, 9], [0, 0, 3]]
    assert (targets[inputs == 0] == 0).all()


def test_shuffled_sessions_cover_every_session_once_per_epoch() -> None:
    batches = ShuffledSessions(SESSIONS, batch_size=3, max_len=3, seed=5)
    assert len(batches) == 2
    expected_inputs, expected_targets = next_item_pairs(last_events(SESSIONS, max_len=4))
    for _ in range(2):
        sessions, inputs, targets = (torch.cat(parts) for parts in zip(*batches, strict=True))
        assert inputs.shape == targets.shape == (4, 3)
        assert sorted(sessions.tolist()) == [0, 1, 2, 3]
        # Each row is the session its index names.
        assert torch.equal(inputs, expected_inputs[sessions]) and torch.equal(targets, expected_targets[sessions])
        # Rows are whole sessions: sorting both sides by row content gives the same rows.
        assert sorted(inputs.tolist()) == sorted(expected_inputs.tolist())
        assert sorted(zip(inputs.tolist(), targets.tolist())) == sorted(
            zip(expected_inputs.tolist(), expected_targets.tolist())
        )


def _split(n_sessions: int = 40) -> SessionSplit:
    generator = np.random.default_rng(0)
    rows = [generator.integers(0, 20, size=generator.integers(2, 12)).tolist() for _ in range(n_sessions)]
    return SessionSplit(train=_sessions(rows, 20), valid=_sessions(rows[:7], 20), test=_sessions(rows[7:], 20))


def _same(first: list[tuple[torch.Tensor, ...]], second: list[tuple[torch.Tensor, ...]]) -> bool:
    """Whether two epochs gave equal batches, in the same order."""
    return len(first) == len(second) and all(
        all(torch.equal(a, b) for a, b in zip(one, other, strict=True))
        for one, other in zip(first, second, strict=True)
    )


def test_datamodule_is_deterministic_for_a_seed() -> None:
    split = _split()
    first = SessionDataModule(split, 8, 16, max_len=5, seed=3, batches_per_call=1)
    again = SessionDataModule(split, 8, 16, max_len=5, seed=3, batches_per_call=1)
    other = SessionDataModule(split, 8, 16, max_len=5, seed=4, batches_per_call=1)
    assert first.n_items == 20 and len(first.train_dataloader()) == 5
    epoch_one = [batch for (batch,) in first.train_dataloader()]  # groups of one batch
    assert all(inputs.shape == targets.shape and inputs.shape[1] == 5 for _, inputs, targets in epoch_one)
    assert _same(epoch_one, [batch for (batch,) in again.train_dataloader()])
    assert not _same(epoch_one, [batch for (batch,) in other.train_dataloader()])
    # A new epoch is a new order (seed + 1), the same for both modules.
    epoch_two = [batch for (batch,) in first.train_dataloader()]
    assert not _same(epoch_one, epoch_two)
    assert _same(epoch_two, [batch for (batch,) in again.train_dataloader()])


def test_evaluation_batches_keep_order_and_shape() -> None:
    split = _split()
    module = SessionDataModule(split, batch_size=8, eval_batch_size=16, max_len=5, seed=0)
    for loader, part in ((module.val_dataloader(), split.valid), (module.test_dataloader(), split.test)):
        sessions, inputs, targets = (torch.cat(parts) for parts in zip(*loader, strict=True))
        expected_inputs, expected_targets = next_item_pairs(last_events(part, max_len=6))
        assert torch.equal(inputs, expected_inputs) and torch.equal(targets, expected_targets)
        assert torch.equal(sessions, torch.arange(len(part)))
        assert all(batch_inputs.shape[0] <= 16 for _, batch_inputs, _ in loader)
        # Every session has >= 2 events, so each row has a target to rank.
        assert ((targets > 0).sum(dim=1) >= 1).all()
