"""robustft: fine-tune adversarially pre-trained image classifiers without losing their robustness."""

__version__ = "0.1.0"
