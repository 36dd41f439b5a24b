"""Tables and plots from run directories; nothing here recomputes a metric."""

from .compare import Comparison, compare_runs
from .paired import paired_difference, verdict
from .plots import plot_alpha_curves, plot_clean_vs_robust, plot_mrc, plot_norm_diagnostics, plot_training_curves
from .tables import load_run, markdown_table, result_row

__all__ = ["load_run", "result_row", "markdown_table", "plot_clean_vs_robust", "plot_training_curves",
           "plot_norm_diagnostics", "plot_alpha_curves", "plot_mrc", "Comparison", "compare_runs", "paired_difference",
           "verdict"]
