"""Layer-wise visual ablation experiments: data, representations, backbones, feature stores.

Import submodules directly; this package's top level stays light because the Snakefile
imports `visual_ablation.plan` at parse time in every Snakemake process.
"""

__version__ = "0.1.0"
