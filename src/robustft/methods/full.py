"""Full fine-tuning baselines: ``standard`` (clean), ``pgd_at`` (Madry et al. 2018), ``trades`` (Zhang et al. 2019)."""

from .base import Method, TradesConfig, register_method

__all__ = ["Trades"]


class Trades(Method):
    """Full fine-tuning whose options include TRADES' attack loss (``ce_attack``)."""

    config_cls = TradesConfig


register_method("standard", Method, objective="clean")
register_method("pgd_at", Method, objective="pgd")
register_method("trades", Trades, objective="trades")
