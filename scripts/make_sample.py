"""Generate data/sample/interactions.csv: a small implicit dataset with known structure.

Users and items have latent factors (dimension 8); item popularity follows a power law. Each user
picks items without replacement with probability proportional to popularity_i * exp(beta * u . v_i)
(Gumbel top-k), so a model that learns the factors ranks held-out items well. Fixed seed: rerunning
the script reproduces the file byte for byte.

    python scripts/make_sample.py [--out data/sample/interactions.csv]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl

N_USERS, N_ITEMS, DIM, SEED = 600, 400, 8, 7
ZIPF_EXPONENT, BETA = 0.9, 2.0


def generate(seed: int = SEED) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    user_factors = rng.normal(0.0, 1.0, (N_USERS, DIM)) / np.sqrt(DIM)
    item_factors = rng.normal(0.0, 1.0, (N_ITEMS, DIM))
    popularity = 1.0 / np.arange(1, N_ITEMS + 1) ** ZIPF_EXPONENT  # [I], power law by rank
    rng.shuffle(popularity)
    logits = np.log(popularity)[None, :] + BETA * user_factors @ item_factors.T  # [U, I]
    perturbed = logits + rng.gumbel(size=logits.shape)
    order = np.argsort(-perturbed, axis=1)  # each row: a sample without replacement
    lengths = np.minimum(10 + rng.geometric(1 / 25, size=N_USERS), N_ITEMS)  # [U]
    taken = np.arange(N_ITEMS)[None, :] < lengths[:, None]
    users = np.broadcast_to(np.arange(N_USERS)[:, None], order.shape)[taken]
    items = order[taken]
    ratings = np.clip(np.round(3 + 1.5 * (perturbed[users, items] - logits.mean())), 1, 5)
    timestamps = 1_600_000_000 + rng.integers(0, 86_400 * 365, size=len(users))
    return pl.DataFrame(
        {"user": users, "item": items, "rating": ratings.astype(np.int64), "timestamp": timestamps}
    ).sort("user", "timestamp")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/sample/interactions.csv"))
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame = generate()
    frame.write_csv(args.out)
    print(f"{args.out}: {frame.height} interactions, {N_USERS} users, {N_ITEMS} items")


if __name__ == "__main__":
    main()
