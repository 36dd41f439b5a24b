"""Evaluation: clean, robust (per attack) and worst-case accuracy with per-sample records."""

from .evaluate import EvalResult, balanced_subset, evaluate

__all__ = ["EvalResult", "evaluate", "balanced_subset"]
