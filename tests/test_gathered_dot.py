"""gathered_dot: the scores and both gradients equal autograd's on the plain gather-and-dot formula,
whatever the chunking, with repeated and never-drawn items, and reproducibly."""

from __future__ import annotations

import pytest
import torch

from recsys.models import gathered_dot as module
from recsys.models.gathered_dot import gathered_dot


def _inputs(batch: int, candidates: int, n_items: int, dim: int = 6, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(batch, dim, dtype=torch.float64, generator=generator, requires_grad=True)
    table = torch.randn(n_items, dim, dtype=torch.float64, generator=generator, requires_grad=True)
    items = torch.randint(n_items, (batch, candidates), generator=generator)
    return query, table, items


@pytest.mark.parametrize("chunk_values", [1, 50, 2**18])  # one row per chunk / uneven chunks / one chunk
@pytest.mark.parametrize("candidates", [1, 7, 300])
def test_values_and_gradients_match_the_gathered_formula(
    chunk_values: int, candidates: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(module, "_CHUNK_VALUES", chunk_values)
    query, table, items = _inputs(batch=9, candidates=candidates, n_items=11)  # many repeats per row
    expected = (table[items] * query.unsqueeze(1)).sum(dim=2)
    torch.testing.assert_close(gathered_dot(query, table, items), expected)
    assert torch.autograd.gradcheck(lambda q, t: gathered_dot(q, t, items), (query, table))


def test_items_never_drawn_get_zero_gradient_and_one_input_may_be_frozen() -> None:
    query, table, items = _inputs(batch=4, candidates=5, n_items=30)
    items = items % 10  # items 10..29 are never candidates
    gathered_dot(query, table, items).sum().backward()
    assert table.grad[10:].abs().sum() == 0 and table.grad[:10].abs().sum() > 0
    frozen = table.detach()
    query.grad = None
    gathered_dot(query, frozen, items).pow(2).sum().backward()
    expected = torch.autograd.grad((frozen[items] * query.unsqueeze(1)).sum(dim=2).pow(2).sum(), query)[0]
    torch.testing.assert_close(query.grad, expected)


def test_the_table_gradient_is_reproducible_to_the_bit() -> None:
    query, table, items = _inputs(batch=64, candidates=200, n_items=50)
    weights = torch.randn(items.shape, dtype=torch.float64)
    grads = []
    for _ in range(2):
        table.grad = None
        (gathered_dot(query.float(), table.float(), items) * weights.float()).sum().backward()
        grads.append(table.grad.clone())
    assert torch.equal(grads[0], grads[1])


def test_without_gradients_it_returns_plain_scores() -> None:
    query, table, items = _inputs(batch=3, candidates=4, n_items=8)
    with torch.no_grad():
        scores = gathered_dot(query, table, items)
    assert not scores.requires_grad
    torch.testing.assert_close(scores, (table[items] * query.unsqueeze(1)).sum(dim=2).detach())


@pytest.mark.parametrize("share", [0.0, 1.01])  # never / always keep only the nonzero-gradient pairs
@pytest.mark.parametrize("margin", [0.5, 1.5, 100.0])  # some pairs / few pairs / no pair above the hinge
def test_a_hinge_loss_gradient_matches_autograd_on_either_path(
    share: float, margin: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(module, "_SPARSE_GRADIENT_SHARE", share)
    query, table, items = _inputs(batch=12, candidates=40, n_items=25, seed=3)
    torch.relu(gathered_dot(query, table, items) - margin).sum().backward()
    expected = torch.autograd.grad(torch.relu((table[items] * query.unsqueeze(1)).sum(dim=2) - margin).sum(),
                                   (query, table))
    torch.testing.assert_close(query.grad, expected[0])
    torch.testing.assert_close(table.grad, expected[1])


def test_leaving_out_zero_gradients_changes_no_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    query, table, items = _inputs(batch=64, candidates=200, n_items=50, seed=4)
    query, table = query.detach().float().requires_grad_(), table.detach().float().requires_grad_()
    grads = []
    for share in (0.0, 1.01):
        monkeypatch.setattr(module, "_SPARSE_GRADIENT_SHARE", share)
        query.grad = table.grad = None
        scores = gathered_dot(query, table, items)
        assert 0 < (scores > 5.0).float().mean() < 0.1  # under 10% of the pairs have a gradient
        torch.relu(scores - 5.0).sum().backward()
        grads.append((query.grad.clone(), table.grad.clone()))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
