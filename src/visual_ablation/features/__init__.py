"""The features stage: representations (image transforms), backbones with their own
preprocessing and readouts, and the extraction that writes a feature store.
"""
