"""robustft: fine-tune adversarially pre-trained image classifiers without losing their robustness.

The verbs below (docs/python.md) are imported on first use, so ``import robustft`` and ``robustft --help`` load no
torch.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "load_model", "list_models", "list_methods", "load_dataset", "create_attack",
           "finetune", "FinetuneResult", "evaluate", "compare_runs", "Comparison"]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports these on first use
    from .api import (
        Comparison,
        FinetuneResult,
        compare_runs,
        create_attack,
        create_model,
        evaluate,
        finetune,
        list_methods,
        list_models,
        load_dataset,
        load_model,
    )


def __getattr__(name: str) -> Any:
    """A verb of ``robustft.api``, imported (with torch) the first time one is used."""
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'robustft' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names with the lazily imported verbs."""
    return sorted({*globals(), *__all__})
