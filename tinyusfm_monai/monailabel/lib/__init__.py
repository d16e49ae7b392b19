"""Infer/train tasks and label conventions of the TinyUSFM MONAI Label app."""
