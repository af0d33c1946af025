"""Time the ways to multiply LightGCN's normalised interaction block by an embedding table.

One propagation layer is ``R~ E_i`` and ``R~^T E_u`` (see recsys/models/graph.py). Prints the median
milliseconds of the forward product and of forward + backward for: torch.sparse.mm on CSR (autograd's
backward), scipy's CSR product (forward only, CPU only), and recsys's SparseMatrix with each of its
kernels (embedding_bag, and torch.sparse.mm on CSR), both with the transpose's product as the backward;
``auto`` picks embedding_bag on the CPU and csr on CUDA.

    python scripts/graph_products.py --data-root ../shared/data --config configs/gowalla/lightgcn.yaml
    python scripts/graph_products.py --data-root ../shared/data --device cuda
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch

from recsys.bench.runs import median_ms
from recsys.config import load_config
from recsys.data.loading import load_split
from recsys.models.graph import normalized_blocks
from recsys.models.sparse import SparseMatrix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/gowalla/lightgcn.yaml"))
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (timed to each call's last kernel)")
    args = parser.parse_args()
    device = torch.device(args.device)
    config = load_config(args.config)
    split = load_split(config.data, args.data_root, config.seed, None)
    block, _ = normalized_blocks(split.train)
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    csr = torch.sparse_csr_tensor(
        torch.from_numpy(block.indptr.astype(np.int64)), torch.from_numpy(block.indices.astype(np.int64)),
        torch.from_numpy(block.data), size=block.shape,
    ).to(device)
    matrices = {kernel: SparseMatrix(block, kernel=kernel).to(device) for kernel in ("embedding_bag", "csr")}
    items = torch.randn(block.shape[1], args.dim).to(device)
    leaf = items.clone().requires_grad_()

    def timed(function, repeats: int = 10) -> float:
        return median_ms(function, repeats, device)

    def backward(product) -> None:
        leaf.grad = None
        product(leaf).sum().backward()

    rows = [
        ("torch.sparse.mm, CSR", timed(lambda: torch.sparse.mm(csr, items)),
         timed(lambda: backward(lambda x: torch.sparse.mm(csr, x)), repeats=5)),
        *((f"SparseMatrix, {kernel} kernel (transpose backward)", timed(lambda m=matrix: m.matmul(items)),
           timed(lambda m=matrix: backward(m.matmul))) for kernel, matrix in matrices.items()),
    ]
    if device.type == "cpu":
        rows.insert(1, ("scipy CSR @ dense", timed(lambda: block @ items.numpy()), float("nan")))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"{config.data.name}: [{block.shape[0]:,} x {block.shape[1]:,}], {block.nnz:,} entries, d {args.dim}, "
          f"{where}, torch {torch.__version__}\n")
    print("| product | forward ms | forward + backward ms |\n|---|---|---|")
    for name, forward, both in rows:
        print(f"| {name} | {forward:.1f} | {both:.1f} |")


if __name__ == "__main__":
    main()
