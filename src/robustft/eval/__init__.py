"""Evaluation: clean, robust (per attack) and worst-case accuracy with per-sample records; AutoAttack on a
class-balanced subset (cached); common-corruption accuracy; module robust criticality (MRC)."""

from .corruption_eval import CorruptionResult, evaluate_corruptions, parse_corruptions, parse_severities
from .corruptions import CIFAR_C_BENCHMARK, CIFAR_C_EXTRA, CORRUPTIONS, corrupt, corrupt_dataset, list_corruptions
from .evaluate import EvalResult, balanced_subset, evaluate, num_outputs
from .mrc import ModuleMRC, MRCProfile, candidate_modules, mrc_examples, mrc_profile, mrc_scores
from .subset import subset_autoattack

__all__ = ["EvalResult", "evaluate", "num_outputs", "balanced_subset", "subset_autoattack", "CORRUPTIONS",
           "CIFAR_C_BENCHMARK", "CIFAR_C_EXTRA", "CorruptionResult", "corrupt", "corrupt_dataset",
           "evaluate_corruptions", "list_corruptions", "parse_corruptions", "parse_severities", "MRCProfile",
           "ModuleMRC", "candidate_modules", "mrc_examples", "mrc_profile", "mrc_scores"]
