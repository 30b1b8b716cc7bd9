"""Analyses over the runs' artefacts: summary statistics, representational similarity,
shape bias. One module each.
"""
