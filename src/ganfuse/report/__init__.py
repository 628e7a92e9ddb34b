"""Looking at runs: a self-contained HTML report (curves, sample timelines, interpolations, class
and prompt grids, metrics, fusion benchmarks).

    from ganfuse.report import build_report
    build_report(["runs/digits", "runs/digits-cond"], "compare.html")
"""

from __future__ import annotations

__all__ = ["build_report"]


def __getattr__(name: str):
    # lazy: ``ganfuse --help`` must not import matplotlib and torch
    if name == "build_report":
        from ganfuse.report.build import build_report

        return build_report
    raise AttributeError(f"module 'ganfuse.report' has no attribute {name!r}")
