"""Models: ``model.name`` -> (config class, LightningModule). Each file is one model."""

from __future__ import annotations

from recsys.models.base import RecommenderModule, TrainingParts
from recsys.models.mf import MatrixFactorization, MFConfig
from recsys.registry import Component, Registry

__all__ = ["MODELS", "RecommenderModule", "TrainingParts"]

MODELS: Registry[RecommenderModule] = Registry(
    "model",
    {
        "mf": Component(MFConfig, MatrixFactorization),
    },
)
