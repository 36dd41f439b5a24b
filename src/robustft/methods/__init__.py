"""Fine-tuning methods behind one interface (``Method``), registered by name."""

from . import autolora, full, linear_probe, partial, rift, roli, twins  # noqa: F401  (registration side effects)
from .autolora import AutoLoRa, AutoLoRaConfig
from .base import (
                   OBJECTIVES,
                   EpochDecision,
                   Method,
                   MethodConfig,
                   ObjectiveConfig,
                   RunContext,
                   Stage,
                   TradesConfig,
                   check_structure,
                   create_method,
                   list_methods,
                   register_method,
                   trades_loss,
)
from .full import Trades
from .linear_probe import LinearProbe
from .partial import Partial, PartialConfig
from .rift import Rift, RiftConfig
from .roli import RoLI, RoLIConfig
from .twins import Twins, TwinsConfig, TwoWingBatchNorm2d

__all__ = ["Method", "MethodConfig", "ObjectiveConfig", "TradesConfig", "RunContext", "Stage", "EpochDecision",
           "check_structure", "create_method", "list_methods", "register_method", "trades_loss", "OBJECTIVES",
           "LinearProbe", "Trades", "Partial", "PartialConfig", "Twins", "TwinsConfig", "TwoWingBatchNorm2d", "RoLI",
           "RoLIConfig", "Rift", "RiftConfig", "AutoLoRa", "AutoLoRaConfig"]
