"""The probes stage: heads, their optimisers and engines, the train and transfer jobs,
and the artefacts a run writes (runs.py).
"""
