"""Benchmark protocols, outside the engine: grids of runs × seeds (each cell an ordinary ``engine.run``), variants
of a method selected on validation, cached AutoAttack on a class-balanced test subset, and the report that checks
the seed papers' claims."""

from .protocol import (
    METRICS,
    AutoAttackSpec,
    CellSpec,
    Claim,
    Protocol,
    Task,
    cell_config,
    cell_dir,
    list_protocols,
    load_protocol,
    slug,
)
from .report import aggregate, check_claims, select_variants, write_protocol_report
from .runner import DEFAULT_DATA_ROOT, bench_roots, run_bench, run_protocol

__all__ = ["Protocol", "Task", "CellSpec", "Claim", "AutoAttackSpec", "METRICS", "load_protocol", "list_protocols",
           "cell_config", "cell_dir", "slug", "select_variants", "aggregate", "check_claims", "write_protocol_report",
           "bench_roots", "run_protocol", "run_bench", "DEFAULT_DATA_ROOT"]
