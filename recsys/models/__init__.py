"""Models: ``model.name`` -> (config class, LightningModule). Each file is one model."""

from __future__ import annotations

from recsys.models.base import RecommenderModule, TrainingParts
from recsys.models.lightgcn import LightGCN, LightGCNConfig
from recsys.models.mf import MatrixFactorization, MFConfig
from recsys.models.sasrec import SASRec, SASRecConfig
from recsys.models.simplex import SimpleX, SimpleXConfig
from recsys.models.weighted_svd import WeightedSVD, WeightedSVDConfig
from recsys.registry import Component, Registry

__all__ = ["MODELS", "RecommenderModule", "TrainingParts"]

MODELS: Registry[RecommenderModule] = Registry(
    "model",
    {
        "mf": Component(MFConfig, MatrixFactorization),
        "lightgcn": Component(LightGCNConfig, LightGCN),
        "simplex": Component(SimpleXConfig, SimpleX),
        "sasrec": Component(SASRecConfig, SASRec),
        "weighted_svd": Component(WeightedSVDConfig, WeightedSVD),
    },
)
