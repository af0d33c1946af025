"""implicit's CPU BPR (Cython, SGD) on the training fold of an exported split, timed.

SPEC: ``train``, ``valid``, ``test`` (the export's ``.inter`` files), ``factors``, ``iterations``,
``threads``, ``seed`` and ``top_k``. implicit fits all iterations in one call, so seconds per epoch are
the fit's seconds over ``iterations``. Evaluation: one batched ``recommend`` of the top ``top_k`` items
for every test user with their train and validation items filtered (ranking only, no metrics). See
``peer_scripts/__init__.py``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from peer_io import peak_rss_mb, write_result


def main(spec_path: str, result_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    try:
        import implicit
        import numpy as np
        import scipy.sparse as sparse
        from implicit.cpu.bpr import BayesianPersonalizedRanking
    except ImportError as error:
        return write_result(result_path, {"unavailable": str(error)})

    users: dict[str, int] = {}
    items: dict[str, int] = {}
    folds = {fold: _read_pairs(Path(spec[fold]), users, items) for fold in ("train", "valid", "test")}

    def matrix(pairs: list[tuple[int, int]]) -> sparse.csr_matrix:
        rows, columns = zip(*pairs) if pairs else ((), ())
        ones = np.ones(len(pairs), dtype=np.float32)
        return sparse.csr_matrix((ones, (rows, columns)), shape=(len(users), len(items)))

    train = matrix(folds["train"])
    model = BayesianPersonalizedRanking(factors=spec["factors"], iterations=spec["iterations"],
                                        num_threads=spec["threads"], random_state=spec["seed"])
    started = time.perf_counter()
    model.fit(train, show_progress=False)
    fit_s = time.perf_counter() - started
    test_users = np.unique([user for user, _ in folds["test"]])
    seen = (train + matrix(folds["valid"])).tocsr()
    started = time.perf_counter()
    model.recommend(test_users, seen[test_users], N=spec["top_k"], filter_already_liked_items=True)
    test_s = time.perf_counter() - started
    return write_result(result_path, {
        "library": f"implicit {implicit.__version__}",
        "epochs": spec["iterations"],
        "epoch_train_s": [fit_s / spec["iterations"]],  # one fit: no per-epoch times
        "val_eval_s": [],
        "test_eval_s": test_s,
        "peak_rss_mb": peak_rss_mb(),
        "train_pairs": int(train.nnz),
        "test_users": len(test_users),
        "n_items": len(items),
    })


def _read_pairs(path: Path, users: dict[str, int], items: dict[str, int]) -> list[tuple[int, int]]:
    """The (user, item) pairs of a RecBole ``.inter`` file (tab-separated, header first, user and item
    tokens in the first two columns), as indices numbered in order of first appearance."""
    pairs = []
    with path.open() as lines:
        next(lines)
        for line in lines:
            user, item = line.rstrip("\n").split("\t")[:2]
            pairs.append((users.setdefault(user, len(users)), items.setdefault(item, len(items))))
    return pairs


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
