"""Looking at runs: a self-contained HTML report (curves, sample timelines, interpolations, class
and prompt grids, metrics, fusion benchmarks).

    from ganfuse.report import build_report
    build_report(["runs/digits", "runs/digits-cond"], "compare.html")
"""

from __future__ import annotations

from ganfuse.report.build import build_report

__all__ = ["build_report"]
