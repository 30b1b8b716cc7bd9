"""The tables as pages of the report: each of the experiment's summary tables that it
plans (summary, similarity, shape bias, amnesic) also as an HTML table, which Snakemake's
report shows as a table (a csv it offers only as a download)."""

from __future__ import annotations

from visual_ablation.spec import layout
from visual_ablation.spec.plans import amnesic, report, shape_bias, similarity

TABLES = ("summary", "similarity", "shape_bias", "amnesic")


def jobs(exp) -> list[str]:
    """The tables this experiment writes: the summary, and each analysis's table where it
    plans that analysis."""
    stages = {"summary": report, "similarity": similarity, "shape_bias": shape_bias}
    stages["amnesic"] = amnesic
    return [table for table in TABLES if stages[table].targets(exp)]


def targets(exp) -> list[str]:
    return [layout.fill(exp.layout.table_page, table=table) for table in jobs(exp)]
