"""The data stage: where images come from (a registry of sources), decoding, the
splits, and the data store a data job writes.
"""
