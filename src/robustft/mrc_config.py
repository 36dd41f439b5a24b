"""The options of module robust criticality (MRC, RiFT) and their defaults, written once: ``robustft.eval.mrc``
measures with them, RiFT's ``method_args.mrc_*`` and ``robustft mrc`` take their defaults from here. Free of torch,
so the CLI's parser reads it without loading the library."""

from dataclasses import dataclass

__all__ = ["MRCConfig", "MRC_DEFAULTS", "IMPLEMENTATIONS"]

IMPLEMENTATIONS = ("fast", "reference")


@dataclass(frozen=True)
class MRCConfig:
    """How MRC is measured, with the official code's defaults: PGD examples of ``n`` training images (L∞
    ``attack_eps``, ``attack_steps`` steps of ``attack_step_size``), then per module ``steps`` ascent iterations of
    step ``lr`` within ‖Δw‖ ≤ ``eps``‖w‖ (over mini-batches of ``minibatch`` images, or full-batch), ``batch_size``
    examples per forward, the ``impl`` implementation."""

    n: int = 512
    eps: float = 0.1
    steps: int = 10
    lr: float = 1.0
    minibatch: int | None = None
    batch_size: int = 512
    impl: str = "fast"
    attack_eps: float = 8 / 255
    attack_steps: int = 10
    attack_step_size: float = 2 / 255


MRC_DEFAULTS = MRCConfig()
