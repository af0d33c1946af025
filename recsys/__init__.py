"""recsys: which negatives, with which loss, make which recommender best, and at what cost."""

__version__ = "0.1.0"
