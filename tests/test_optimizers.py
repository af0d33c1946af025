"""LazyAdam against torch's Adam and SparseAdam, and optimizers by name."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from recsys.models.optimizers import LazyAdam, build_optimizer

STEPS = 20
LR = 0.01


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_dense_gradients_match_adam(weight_decay: float) -> None:
    generator = torch.Generator().manual_seed(0)
    init = [torch.randn(6, 4, generator=generator), torch.randn(4, generator=generator)]
    lazy_params = [nn.Parameter(tensor.clone()) for tensor in init]
    adam_params = [nn.Parameter(tensor.clone()) for tensor in init]
    lazy = LazyAdam(lazy_params, lr=LR, weight_decay=weight_decay)
    adam = torch.optim.Adam(adam_params, lr=LR, weight_decay=weight_decay)
    for _ in range(STEPS):
        for lazy_param, adam_param in zip(lazy_params, adam_params):
            grad = torch.randn(lazy_param.shape, generator=generator)
            lazy_param.grad, adam_param.grad = grad.clone(), grad.clone()
        lazy.step()
        adam.step()
    for lazy_param, adam_param, start in zip(lazy_params, adam_params, init):
        assert not torch.allclose(lazy_param, start)  # it did move
        torch.testing.assert_close(lazy_param, adam_param, rtol=0, atol=1e-6)


def _sparse_step(
    embedding: nn.Embedding, optimizer: torch.optim.Optimizer, rows: Tensor, target: Tensor
) -> None:
    """One step on ``sum(embedding(rows) * target)``: a sparse gradient on ``rows``, summed where repeated."""
    optimizer.zero_grad()
    (embedding(rows) * target).sum().backward()
    optimizer.step()


def test_sparse_gradients_match_sparse_adam() -> None:
    generator = torch.Generator().manual_seed(1)
    init = torch.randn(20, 4, generator=generator)
    lazy_table = nn.Embedding.from_pretrained(init.clone(), freeze=False, sparse=True)
    torch_table = nn.Embedding.from_pretrained(init.clone(), freeze=False, sparse=True)
    lazy = LazyAdam(lazy_table.parameters(), lr=LR)
    sparse_adam = torch.optim.SparseAdam(torch_table.parameters(), lr=LR)
    for _ in range(STEPS):
        rows = torch.randint(15, (8,), generator=generator)  # rows 15..19 are never in a batch
        target = torch.randn(8, 4, generator=generator)
        _sparse_step(lazy_table, lazy, rows, target)
        _sparse_step(torch_table, sparse_adam, rows, target)
    assert lazy_table.weight.grad.is_sparse  # the sparse path really ran
    torch.testing.assert_close(lazy_table.weight, torch_table.weight, rtol=0, atol=1e-6)
    assert not torch.allclose(lazy_table.weight[:15], init[:15])
    assert torch.equal(lazy_table.weight[15:], init[15:])


def test_sparse_rows_outside_the_batch_do_not_move() -> None:
    """Lazy: a row with momentum from an earlier step stays put in a step that does not touch it."""
    table = nn.Embedding.from_pretrained(torch.randn(4, 3), freeze=False, sparse=True)
    optimizer = LazyAdam(table.parameters(), lr=LR)
    _sparse_step(table, optimizer, torch.tensor([0, 1]), torch.ones(2, 3))
    after_first = table.weight.detach().clone()
    _sparse_step(table, optimizer, torch.tensor([1]), torch.ones(1, 3))
    assert torch.equal(table.weight[[0, 2, 3]], after_first[[0, 2, 3]])
    assert not torch.equal(table.weight[1], after_first[1])


def test_repeated_rows_get_the_summed_gradient_in_the_moments() -> None:
    table = nn.Embedding.from_pretrained(torch.zeros(4, 2), freeze=False, sparse=True)
    optimizer = LazyAdam(table.parameters(), lr=LR, betas=(0.9, 0.999))
    target = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])
    _sparse_step(table, optimizer, torch.tensor([2, 2, 0]), target)  # row 2 twice: grad [4, 1]
    state = optimizer.state[table.weight]
    expected_grad = torch.tensor([[0.5, 0.5], [0.0, 0.0], [4.0, 1.0], [0.0, 0.0]])
    torch.testing.assert_close(state["exp_avg"], 0.1 * expected_grad)
    torch.testing.assert_close(state["exp_avg_sq"], 0.001 * expected_grad**2)


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_touched_rows_follow_adam_on_grad_plus_weight_decay(weight_decay: float) -> None:
    """Rows ``2`` (three times a batch) and ``5`` each step: they follow dense Adam on those rows alone.

    torch's Adam adds ``weight_decay * w`` to the gradient, so this also checks LazyAdam's decay of the
    touched rows (once per row, however often it appears in the batch).
    """
    generator = torch.Generator().manual_seed(2)
    init = torch.randn(8, 3, generator=generator)
    rows = torch.tensor([2, 5, 2, 2])
    touched = torch.tensor([2, 5])
    table = nn.Embedding.from_pretrained(init.clone(), freeze=False, sparse=True)
    lazy = LazyAdam(table.parameters(), lr=LR, weight_decay=weight_decay)
    reference = nn.Parameter(init[touched].clone())  # [2, 3]: only the touched rows
    adam = torch.optim.Adam([reference], lr=LR, weight_decay=weight_decay)
    position = torch.tensor([0, 1, 0, 0])  # each batch entry's row in `reference`
    for _ in range(STEPS):
        target = torch.randn(4, 3, generator=generator)
        _sparse_step(table, lazy, rows, target)
        adam.zero_grad()
        (reference[position] * target).sum().backward()  # dense autograd sums the repeated row
        adam.step()
    torch.testing.assert_close(table.weight[touched], reference, rtol=0, atol=1e-6)
    untouched = torch.tensor([0, 1, 3, 4, 6, 7])
    assert torch.equal(table.weight[untouched], init[untouched])


def test_sparse_weight_decay_changes_the_update() -> None:
    """Guards the test above: with these rows, decay 0.05 and decay 0 end in different places."""
    init = torch.randn(8, 3, generator=torch.Generator().manual_seed(3))
    finals = []
    for weight_decay in (0.0, 0.05):
        table = nn.Embedding.from_pretrained(init.clone(), freeze=False, sparse=True)
        optimizer = LazyAdam(table.parameters(), lr=LR, weight_decay=weight_decay)
        for _ in range(STEPS):
            _sparse_step(table, optimizer, torch.tensor([2, 5]), torch.full((2, 3), 0.01))
        finals.append(table.weight.detach()[[2, 5]])
    assert (finals[0] - finals[1]).abs().max() > 1e-4


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("adam", torch.optim.Adam),
        ("adamw", torch.optim.AdamW),
        ("sparse_adam", LazyAdam),
        ("sgd", torch.optim.SGD),
        ("adagrad", torch.optim.Adagrad),
    ],
)
def test_build_optimizer_by_name(name: str, expected: type[torch.optim.Optimizer]) -> None:
    layer = nn.Linear(3, 2)
    optimizer = build_optimizer(name, layer.parameters(), lr=0.05, weight_decay=0.01)
    assert type(optimizer) is expected
    assert optimizer.param_groups[0]["lr"] == 0.05 and optimizer.param_groups[0]["weight_decay"] == 0.01
    assert len(optimizer.param_groups[0]["params"]) == 2
    before = layer.weight.detach().clone()
    layer(torch.ones(4, 3)).sum().backward()
    optimizer.step()
    assert not torch.equal(layer.weight, before)


def test_build_sparse_adam_steps_on_a_sparse_embedding() -> None:
    table = nn.Embedding(10, 4, sparse=True)
    before = table.weight.detach().clone()
    optimizer = build_optimizer("sparse_adam", table.parameters(), lr=0.1, weight_decay=0.0)
    _sparse_step(table, optimizer, torch.tensor([3]), torch.ones(1, 4))
    assert not torch.equal(table.weight[3], before[3])
    assert torch.equal(table.weight[[0, 1, 2, 4]], before[[0, 1, 2, 4]])


def test_build_optimizer_rejects_an_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        unknown: Any = "lamb"
        build_optimizer(unknown, nn.Linear(2, 2).parameters(), lr=0.1, weight_decay=0.0)
