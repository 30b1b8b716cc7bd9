"""The tables as pages of the report: each of the experiment's summary tables that it
plans (summary, similarity, shape bias, amnesic) also as an HTML table, which Snakemake's
report shows as a table (a csv it offers only as a download)."""

from __future__ import annotations

from visual_ablation.spec import layout
from visual_ablation.spec.plans import amnesic, report, shape_bias, similarity

# each table (the stem of its csv) and the stage that writes it
TABLES = {"summary": report, "similarity": similarity, "shape_bias": shape_bias, "amnesic": amnesic}


def jobs(exp) -> list[str]:
    """The tables this experiment writes: the summary, and each analysis's table where it
    plans that analysis."""
    return [table for table, stage in TABLES.items() if stage.targets(exp)]


def targets(exp) -> list[str]:
    return [layout.fill(exp.layout.table_page, table=table) for table in jobs(exp)]
