"""What each stage plans: its jobs (named tuples) and the files it must produce, from the
resolved `Experiment`. One module per stage; each has `targets(exp)`, the stage's final
files (what `rule all` asks for), so a new analysis is a module here and a line in STAGES.
"""

from __future__ import annotations

from visual_ablation.spec.plans import (
    amnesic,
    features,
    report,
    shape_bias,
    similarity,
    tables,
    train,
    transfer,
)

# the stages whose final files `rule all` collects, in the order the report shows them
STAGES = (features, train, transfer, report, similarity, shape_bias, amnesic, tables)


def targets(exp) -> list[str]:
    """Every stage's final files: the default target."""
    return [path for stage in STAGES for path in stage.targets(exp)]
