"""Time the parts of a SimpleX step that the hand-written backwards and the sparse ``gathered_dot``
backward replaced, old way against new, at the official configs' shapes.

- the item table's normalisation, forward + backward: ``F.normalize`` against ``normalize_rows``;
- the L2 penalty on a table, forward + backward: ``x.pow(2).sum()`` against ``squared_norm``;
- ``gathered_dot``, forward + backward, for a hinge loss's gradient (the positive column and a share of the
  negatives nonzero, as CCL leaves it): over every pair against over the nonzero pairs only.

    python scripts/simplex_step_parts.py --threads 1
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from recsys.bench.runs import median_ms
from recsys.models import gathered_dot as gathered
from recsys.models.whole_table import normalize_rows, squared_norm

# (label, queries B, candidates C, catalogue I)
SHAPES = [
    ("Yelp2018: 1000 negatives", 512, 1001, 38048),
    ("Gowalla: 2000 negatives", 256, 2001, 40981),
]


def _backward(function, table: torch.Tensor, grad: torch.Tensor | None = None):
    def call() -> None:
        table.grad = None
        out = function(table)
        out.backward(grad) if grad is not None else out.backward()
    return call


def _gathered_backward(query, table, items, grad, dense: bool):
    def call() -> None:
        saved = gathered._SPARSE_GRADIENT_SHARE
        gathered._SPARSE_GRADIENT_SHARE = 0.0 if dense else saved
        try:
            query.grad = table.grad = None
            gathered.gathered_dot(query, table, items).backward(grad)
        finally:
            gathered._SPARSE_GRADIENT_SHARE = saved
    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), d {args.dim}; median ms of {args.repeats}\n")
    print("| shape | F.normalize | normalize_rows | pow(2).sum() | squared_norm "
          "| gathered_dot fwd + bwd, all pairs (1% / 10% nonzero) | nonzero pairs only (1% / 10%) |")
    print("|---|---|---|---|---|---|---|")
    for label, batch, candidates, n_items in SHAPES:
        table = (torch.randn(n_items, args.dim, generator=generator) * 1e-2).requires_grad_()
        upstream = torch.randn(n_items, args.dim, generator=generator)
        cells = [
            median_ms(_backward(lambda x: F.normalize(x, dim=1), table, upstream), args.repeats),
            median_ms(_backward(normalize_rows, table, upstream), args.repeats),
            median_ms(_backward(lambda x: x.pow(2).sum(), table), args.repeats),
            median_ms(_backward(squared_norm, table), args.repeats),
        ]
        query = torch.randn(batch, args.dim, generator=generator).requires_grad_()
        items = torch.randint(n_items, (batch, candidates), generator=generator)
        timings = {True: [], False: []}
        for share in (0.01, 0.10):
            grad = torch.randn(batch, candidates, generator=generator)
            grad[:, 1:] *= torch.rand(batch, candidates - 1, generator=generator) < share
            for dense in (True, False):
                timings[dense].append(median_ms(_gathered_backward(query, table, items, grad, dense), args.repeats))
        cells += [" / ".join(f"{t:.2f}" for t in timings[True]), " / ".join(f"{t:.2f}" for t in timings[False])]
        text = [f"{c:.2f}" if isinstance(c, float) else c for c in cells]
        print(f"| {label} ({batch} x {candidates} of {n_items:,}) | " + " | ".join(text) + " |")


if __name__ == "__main__":
    main()
