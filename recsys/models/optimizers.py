"""Optimizers by name, and LazyAdam for sparse embedding gradients."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch
from torch import Tensor

__all__ = ["LazyAdam", "OptimizerName", "build_optimizer"]

OptimizerName = Literal["adam", "adamw", "sparse_adam", "sgd", "adagrad"]


class LazyAdam(torch.optim.Optimizer):
    """Adam (Kingma & Ba, ICLR 2015, Algorithm 1) that updates sparse-gradient rows lazily.

    A dense gradient gets exactly Adam's update. A sparse gradient (``nn.Embedding(sparse=True)``)
    updates the moments and values of only the rows in the batch, as torch's ``SparseAdam`` and
    TensorFlow's ``LazyAdam`` do; bias correction uses the parameter's step count. Untouched rows keep
    their moments instead of decaying them, which is what makes a step cost ``O(rows in the batch)``
    rather than ``O(table)``: on gowalla (4.5 M embedding values) a dense Adam step alone costs more than
    the whole sparse step.

    ``weight_decay`` adds ``weight_decay * w`` to the gradient of the rows updated (L2 on the rows
    in the batch, each once).
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["step"] += 1
                step_size = group["lr"] / (1 - beta1 ** state["step"])
                correction2_sqrt = math.sqrt(1 - beta2 ** state["step"])
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                if param.grad.is_sparse:
                    grad = param.grad.coalesce()
                    rows, values = grad.indices()[0], grad.values()  # [R], [R, d]; rows unique
                    if group["weight_decay"]:
                        values = values.add(param.index_select(0, rows), alpha=group["weight_decay"])
                    # index_select / index_copy_ / index_add_ without alpha: measured 2-5x faster on
                    # CPU than advanced indexing, item assignment and index_add_ with alpha.
                    first = exp_avg.index_select(0, rows).mul_(beta1).add_(values, alpha=1 - beta1)
                    second = exp_avg_sq.index_select(0, rows).mul_(beta2).addcmul_(values, values, value=1 - beta2)
                    exp_avg.index_copy_(0, rows, first)
                    exp_avg_sq.index_copy_(0, rows, second)
                    denominator = second.sqrt_().div_(correction2_sqrt).add_(group["eps"])
                    param.index_add_(0, rows, first.div_(denominator).mul_(-step_size))
                else:
                    grad = param.grad
                    if group["weight_decay"]:
                        grad = grad.add(param, alpha=group["weight_decay"])
                    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                    denominator = exp_avg_sq.sqrt().div_(correction2_sqrt).add_(group["eps"])
                    param.addcdiv_(exp_avg, denominator, value=-step_size)
        return loss


def build_optimizer(
    name: OptimizerName, params: Iterable[Tensor], lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """The optimizer called ``name``; ``sparse_adam`` is ``LazyAdam`` (embeddings must be sparse)."""
    params = list(params)
    # The fused kernel measured 3x faster than the default per step for MF on ml-100k (CPU).
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params) or None
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)
    if name == "sparse_adam":
        return LazyAdam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")
