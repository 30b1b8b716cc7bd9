"""Plumbing under every stage: the zarr store (checksummed, locked, resumable), atomic
writes of tables, device choice and GPU leases, job logs, remembered records. Imports
nothing else of the package.
"""
