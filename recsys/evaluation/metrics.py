"""Top-K ranking metrics from a hit matrix, one value per query.

``hits[b, r]`` is 1 when the item ranked ``r + 1`` for query ``b`` is relevant; ``n_relevant[b]`` is the
number of relevant (held-out) items of query ``b``. Definitions (as in RecBole 1.2.1 and LightGCN):

- ``recall@K = hits in top K / n_relevant``
- ``precision@K = hits in top K / K``
- ``hit@K = 1 if any hit in top K``
- ``mrr@K = 1 / rank of the first hit in top K`` (0 without one)
- ``ndcg@K = DCG@K / IDCG@K`` with ``DCG = sum_r hit_r / log2(r + 1)`` and the ideal DCG of
  ``min(n_relevant, K)`` hits at the top
- ``map@K = sum_r precision@r * hit_r / min(n_relevant, K)``
- ``dcg@K = sum_{r <= K} hit_r / log2(r + 1)``, not normalised (for randomly exposed test sets, where
  Saito et al., WSDM 2020 report it)

With ``item_weights`` ``w_i = 1 / theta_i`` (inverse propensities), self-normalised inverse-propensity
(SNIPS) estimates of what recall and DCG would be had every item been exposed alike (Yang et al., RecSys
2018, Eq. 8): over the users ``u`` of a pass, with ``S_u`` their relevant items,

- ``snips_recall@K = sum_u sum_{i in S_u, rank <= K} w_i / sum_u sum_{i in S_u} w_i``
- ``snips_dcg@K = sum_u sum_{i in S_u, rank <= K} w_i / log2(rank + 1) / sum_u sum_{i in S_u} w_i``

The normaliser is pooled over users, not per user: a per-user normaliser (Saito et al.'s code) cancels
the weight of a user's only relevant item, leaving most users' values uncorrected. Per-user values are
``numerator_u / mean_u(sum_{i in S_u} w_i)``, so their mean is the estimate.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["METRICS", "WEIGHTED_METRICS", "ranking_metrics", "weighted_ranking_metrics"]

METRICS = ("recall", "ndcg", "mrr", "hit", "precision", "map", "dcg")
WEIGHTED_METRICS = ("snips_recall", "snips_dcg")


def ranking_metrics(
    hits: Tensor, n_relevant: Tensor, ks: Sequence[int], metrics: Sequence[str] = METRICS
) -> dict[str, Tensor]:
    """Per-query metrics at every K.

    Args:
        hits: ``[B, R]`` bool or 0/1, relevance of the top-R ranked items (R >= max(ks), or the
            catalogue size when that is smaller).
        n_relevant: ``[B]`` number of relevant items per query (> 0).
        ks: cut-offs.
        metrics: names from ``METRICS``.

    Returns:
        ``"{metric}@{k}"`` -> ``[B]`` float64.
    """
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; known: {METRICS}")
    hits = hits.to(torch.float64)
    depth = hits.shape[1]
    rank = torch.arange(1, depth + 1, dtype=torch.float64, device=hits.device)  # [R]
    discount = 1.0 / torch.log2(rank + 1.0)  # [R]
    n_relevant = n_relevant.to(torch.float64)

    cumulative_hits = hits.cumsum(dim=1)  # [B, R]
    dcg = (hits * discount).cumsum(dim=1)  # [B, R]
    ideal_dcg = torch.cat([discount.new_zeros(1), discount.cumsum(dim=0)])  # [R + 1], by #hits
    reciprocal_rank = (hits / rank).cummax(dim=1).values  # [B, R], 1 / first hit rank so far
    average_precision = (cumulative_hits / rank * hits).cumsum(dim=1)  # [B, R]

    results: dict[str, Tensor] = {}
    for k in ks:
        column = min(k, depth) - 1
        found = cumulative_hits[:, column]
        capped = torch.clamp(n_relevant, max=k)  # min(n_relevant, K)
        values = {
            "recall": lambda: found / n_relevant,
            "precision": lambda: found / k,
            "hit": lambda: (found > 0).to(torch.float64),
            "mrr": lambda: reciprocal_rank[:, column],
            "ndcg": lambda: dcg[:, column] / ideal_dcg[capped.clamp(max=depth).long()],
            "map": lambda: average_precision[:, column] / capped,
            "dcg": lambda: dcg[:, column],
        }
        for name in metrics:
            results[f"{name}@{k}"] = values[name]()
    return results


def weighted_ranking_metrics(
    hits: Tensor, hit_weights: Tensor, relevant_weight: Tensor, ks: Sequence[int]
) -> dict[str, Tensor]:
    """Per-query values of the self-normalised inverse-propensity metrics (``WEIGHTED_METRICS``).

    Args:
        hits: ``[B, R]`` bool or 0/1, as for ``ranking_metrics``.
        hit_weights: ``[B, R]`` weight ``1 / theta`` of each ranked item.
        relevant_weight: ``[B]`` or scalar, the normaliser: the mean over the pass's users of the sum of
            their relevant items' weights.
        ks: cut-offs.

    Returns:
        ``"snips_{recall,dcg}@{k}"`` -> ``[B]`` float64.
    """
    weighted = hits.to(torch.float64) * hit_weights.to(torch.float64)  # [B, R]
    depth = weighted.shape[1]
    rank = torch.arange(1, depth + 1, dtype=torch.float64, device=weighted.device)
    found = weighted.cumsum(dim=1)
    discounted = (weighted / torch.log2(rank + 1.0)).cumsum(dim=1)
    total = relevant_weight.to(torch.float64)
    results: dict[str, Tensor] = {}
    for k in ks:
        column = min(k, depth) - 1
        results[f"snips_recall@{k}"] = found[:, column] / total
        results[f"snips_dcg@{k}"] = discounted[:, column] / total
    return results
