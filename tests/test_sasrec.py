"""SASRec: causal attention (no future leakage), padding neither attended, counted nor ranked, the
sampler knowing queries by their sessions, and evaluation of every next item."""

from __future__ import annotations

import torch

from recsys.data.sessions import Sessions, ShuffledSessions
from recsys.evaluation.evaluator import FullRankingEvaluator
from recsys.interfaces import Negatives
from recsys.losses import bce_loss
from recsys.models.base import TrainingParts
from recsys.models.sasrec import SASRec, SASRecConfig
from recsys.samplers.uniform import UniformSampler
from tests.factories import rows_sessions

N_ITEMS = 12
ROWS = [[0, 1, 2, 3], [4, 5], [6, 7, 8], [1, 9, 10, 11, 2]]


def _sessions(rows: list[list[int]]) -> Sessions:
    return rows_sessions(rows, N_ITEMS)


def _model(sampler=None, max_len: int = 6, **options) -> SASRec:
    torch.manual_seed(0)
    parts = TrainingParts(
        n_users=len(ROWS), n_items=N_ITEMS, sampler=sampler or UniformSampler(N_ITEMS, 1), loss=bce_loss,
        evaluator=FullRankingEvaluator((1, 3)),
    )
    model = SASRec(SASRecConfig(dim=8, layers=2, heads=2, max_len=max_len, **{"dropout": 0.0, **options}), parts)
    return model.eval()


def test_a_later_item_never_changes_an_earlier_prediction() -> None:
    model = _model()
    inputs = torch.tensor([[0, 0, 3, 5, 7, 9], [1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        before = model.encode(inputs)
        for t in range(5):
            changed = inputs.clone()
            changed[:, t + 1] = 11  # another item at t + 1
            after = model.encode(changed)
            torch.testing.assert_close(after[:, : t + 1], before[:, : t + 1])
            assert not torch.allclose(after[:, t + 1 :], before[:, t + 1 :])


def test_padding_is_not_attended_and_its_width_does_not_matter() -> None:
    # The same session left-padded to 3 or 6 columns, or with other items where the padding is:
    # its real positions' states are equal (positions count from the right; padded keys are masked).
    model = _model()
    with torch.no_grad():
        short = model.encode(torch.tensor([[4, 5, 6]]))
        padded = model.encode(torch.tensor([[0, 0, 0, 4, 5, 6]]))
    torch.testing.assert_close(padded[:, 3:], short)


def test_padding_is_never_ranked_and_every_next_item_is_one_query() -> None:
    model = _model()
    batches = list(ShuffledSessions(_sessions(ROWS), batch_size=3, max_len=5, shuffle=False))
    model.evaluator.begin(model)
    model.begin_evaluation()
    with torch.no_grad():
        for batch in batches:
            model.validation_step(batch, 0)
    results = model.evaluator.end()
    # One query per event that has a successor: 3 + 1 + 2 + 4.
    assert torch.equal(results["queries"], torch.arange(10))
    assert model.item_embeddings().shape == (N_ITEMS, 8)  # the padding row is not an item
    # Recall@1 by hand: each query's top item (argmax over the real items) is its next item.
    with torch.no_grad():
        hits = []
        for _, inputs, targets in batches:
            where = targets > 0
            scores = model.encode(inputs)[where] @ model.item_embedding.weight[1:].T
            hits.append((scores.argmax(1) == targets[where] - 1).float())
    torch.testing.assert_close(results["recall@1"], torch.cat(hits).to(results["recall@1"].dtype))


class _Recording(UniformSampler):
    """A uniform sampler that keeps the ids its queries came with."""

    def forward(self, queries, positives, scorer) -> Negatives:
        self.seen = (queries.clone(), positives.clone())
        return super().forward(queries, positives, scorer)


def test_training_queries_are_positions_known_to_the_sampler_by_their_session() -> None:
    sampler = _Recording(N_ITEMS, 1)
    model = _model(sampler).train()
    sessions, inputs, targets = next(iter(ShuffledSessions(_sessions(ROWS), 4, max_len=5, seed=1)))
    loss = model.training_loss((sessions, inputs, targets))
    owners, positives = sampler.seen
    where = targets > 0
    assert torch.equal(owners, sessions.unsqueeze(1).expand_as(targets)[where])
    assert torch.equal(positives, targets[where] - 1)
    loss.backward()
    assert model.item_embedding.weight.grad[1:].abs().sum() > 0


def test_a_sessions_own_items_are_never_its_negatives() -> None:
    sessions = _sessions(ROWS)
    train = sessions.interactions()
    assert sorted(zip(train.users.tolist(), train.items.tolist(), strict=True)) == sorted(
        {(s, i) for s, row in enumerate(ROWS) for i in row}
    )
    sampler = UniformSampler(N_ITEMS, 50, positives=train.csr(), seed=3)
    batch = next(iter(ShuffledSessions(sessions, 4, max_len=5, seed=2)))
    recording = _Recording(N_ITEMS, 1)
    _model(recording).training_loss(batch)
    owners, positives = recording.seen
    negatives = sampler(owners, positives, scorer=None).items
    for owner, row in zip(owners.tolist(), negatives.tolist(), strict=True):
        assert not set(row) & set(ROWS[owner])
