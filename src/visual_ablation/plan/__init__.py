"""The experiment as planned: the config resolved into specs, the jobs each stage plans
(`stages/`), resource requests and the checks before any job runs. Imported by the
Snakefile at parse time: keep it light (no torch, no zarr).
"""
