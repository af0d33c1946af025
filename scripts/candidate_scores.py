"""Time the ways to score each query against its own sampled candidates.

``s[b, c] = q[b] . E[items[b, c]]`` for the training shapes of recsys's configs. Prints the median
milliseconds, forward + backward and forward only, of: gathering the ``[B, C, d]`` rows and
``batched_dot`` in 16 MiB chunks (what every model did before ``gathered_dot``, and what sparse
embedding gradients still use); ``gathered_dot``; and one GEMM over the catalogue with a pick.

    python scripts/candidate_scores.py --threads 1
    python scripts/candidate_scores.py --device cuda
"""

from __future__ import annotations

import argparse

import torch

from recsys.bench.runs import median_ms
from recsys.models.batched_dot import batched_dot
from recsys.models.gathered_dot import gathered_dot

# (label, queries B, candidates C, catalogue I)
SHAPES = [
    ("MF-BPR, 1 negative, Gowalla", 2048, 2, 40981),
    ("MF, 4 negatives, Gowalla", 2048, 5, 40981),
    ("DNS candidates, 64 of Gowalla", 2048, 65, 40981),
    ("DNS candidates, 64 of ml-100k", 2048, 65, 1682),
    ("MF-BPR, 300 negatives (BARS), Gowalla", 256, 301, 40981),
    ("SimpleX, 1000 negatives, Yelp2018", 512, 1001, 38048),
    ("SimpleX, 2000 negatives, Gowalla", 256, 2001, 40981),
    ("SimpleX, 256 negatives, ml-100k", 2048, 257, 1682),
]


def _rows(query: torch.Tensor, table: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    rows = max(1, 2**22 // (items.shape[1] * query.shape[1]))
    return torch.cat([
        batched_dot(query[s : s + rows], table.index_select(0, items[s : s + rows].reshape(-1)).view(-1, items.shape[1], query.shape[1]))
        for s in range(0, len(query), rows)
    ])


def _gemm(query: torch.Tensor, table: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    return (query @ table.T).gather(1, items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (timed to each call's last kernel)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    ways = {"rows + batched_dot": _rows, "gathered_dot": gathered_dot, "catalogue GEMM": _gemm}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{args.threads} thread(s)"
    print(f"torch {torch.__version__}, {where}, d {args.dim}; median ms of {args.repeats}\n")
    print("| shape | B x C of I | " + " | ".join(f"{name} fwd+bwd" for name in ways) + " | "
          + " | ".join(f"{name} fwd" for name in ways) + " |")
    print("|---|---|" + "---|" * (2 * len(ways)))
    for label, batch, candidates, n_items in SHAPES:
        query = torch.randn(batch, args.dim, generator=generator).to(device).requires_grad_()
        table = torch.randn(n_items, args.dim, generator=generator).to(device).requires_grad_()
        items = torch.randint(n_items, (batch, candidates), generator=generator).to(device)
        weights = torch.randn(batch, candidates, generator=generator).to(device)
        trained, forward = [], []
        def step(way) -> None:
            query.grad = table.grad = None
            way(query, table, items).backward(weights)

        for way in ways.values():
            trained.append(median_ms(lambda way=way: step(way), args.repeats, device))
            with torch.no_grad():
                forward.append(median_ms(lambda way=way: way(query, table, items), args.repeats, device))
        print(f"| {label} | {batch} x {candidates} of {n_items:,} | "
              + " | ".join(f"{ms:.2f}" for ms in trained + forward) + " |")


if __name__ == "__main__":
    main()
