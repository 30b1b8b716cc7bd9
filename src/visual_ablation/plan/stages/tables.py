"""The tables as pages of the report, and its landing text: each results table the
experiment plans (every stage's TABLE where it plans anything) also as an HTML table,
which Snakemake's report shows as a table (a csv it offers only as a download); the
landing text is each planned stage's paragraph (`stages.description`)."""

from __future__ import annotations

from visual_ablation import layout
from visual_ablation.plan import stages

AFTER = stages.EVERY  # every stage's table
LANDING = "report.rst"  # the report's landing text, under the results directory


def jobs(exp) -> list[str]:
    """The tables this experiment writes."""
    return stages.planned_tables(exp)


def landing(exp) -> str:
    return exp.layout.result(LANDING)


def targets(exp) -> list[str]:
    return [layout.fill(exp.layout.table_page, table=table) for table in jobs(exp)] + [landing(exp)]


def describe(exp) -> str:
    listed = ", ".join(f"``{table}.csv``" for table in ["metrics", *jobs(exp)])
    return f"Tables, in the results directory: {listed}."
