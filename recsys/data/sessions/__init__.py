"""The session data layer for session-based transformers (TRON / SASRec).

Data order: a reader (``readers``) gives one event frame; ``preprocess`` filters it as TRON does and
splits it (by time, or as given files) into ``Sessions`` over one item id map (``sessions``);
``batching`` cuts left-padded next-item batches; ``datamodule`` serves them to Lightning.
"""

from recsys.data.sessions.batching import ShuffledSessions, last_events, next_item_pairs
from recsys.data.sessions.datamodule import SessionDataModule
from recsys.data.sessions.preprocess import (
    clicks_only,
    drop_unseen_items,
    filter_items,
    filter_sessions,
    given_split,
    last_sessions,
    split_by_last_event,
    tron_split,
)
from recsys.data.sessions.readers import (
    EVENT_TYPES,
    SESSION_READERS,
    read_diginetica,
    read_otto,
    read_sequences,
    read_sessions,
    read_yoochoose,
)
from recsys.data.sessions.sessions import Sessions, SessionSplit

__all__ = [
    "EVENT_TYPES",
    "SESSION_READERS",
    "SessionDataModule",
    "SessionSplit",
    "Sessions",
    "ShuffledSessions",
    "clicks_only",
    "drop_unseen_items",
    "filter_items",
    "filter_sessions",
    "given_split",
    "last_sessions",
    "last_events",
    "next_item_pairs",
    "read_diginetica",
    "read_otto",
    "read_sequences",
    "read_sessions",
    "read_yoochoose",
    "split_by_last_event",
    "tron_split",
]
