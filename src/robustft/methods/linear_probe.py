"""Linear probing: only the classifier trains; the backbone is frozen and kept in eval mode (BN statistics fixed)."""

from torch import nn

from .base import Method, register_method

__all__ = ["LinearProbe"]


class LinearProbe(Method):
    """Train the head alone, clean (``linear_probe``) or adversarially (``adv_linear_probe``, RoLI's stage 1)."""

    needs_structure = "it trains the classifier alone, found by get_classifier()"

    def prepare(self, model: nn.Module) -> nn.Module:
        """Freeze everything but the classifier."""
        model.requires_grad_(False)
        model.get_classifier().requires_grad_(True)
        return model

    def train_mode(self, model: nn.Module) -> None:
        """Backbone in eval (fixed BN statistics, no dropout); the head in train mode."""
        model.eval()
        model.get_classifier().train()


register_method("linear_probe", LinearProbe, objective="clean")
register_method("adv_linear_probe", LinearProbe, objective="pgd")
