"""Full fine-tuning baselines: ``standard`` (clean), ``pgd_at`` (Madry et al. 2018), ``trades`` (Zhang et al. 2019)."""

from .base import Method, register_method

__all__: list[str] = []

register_method("standard", Method, objective="clean")
register_method("pgd_at", Method, objective="pgd")
register_method("trades", Method, objective="trades")
