"""Scripts that run a peer library in its own interpreter for `recsys bench speed` (``recsys.bench.peers``).

Each file is self-contained (standard library plus its peer, never ``recsys``), because it runs in the
peers environment, whose pins conflict with ours. The protocol: ``python SCRIPT SPEC.json RESULT.json``
in a scratch working directory; SPEC says what to run on which exported split, and RESULT receives
either the measurements::

    {"library": "RecBole 1.2.1", "epochs": 5, "epoch_train_s": [...], "val_eval_s": [...], "test_eval_s": 0.1,
     "peak_rss_mb": 512.0, "train_pairs": 80808, "test_users": 943, "n_items": 1682}

or ``{"unavailable": "No module named 'recbole'"}`` when the peer is not installed there (exit code 0
either way; any other failure exits non-zero with a traceback on stderr).
"""
