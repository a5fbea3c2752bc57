"""Inference: prediction, the HDF5 prediction cache, and pasting masks into image space."""
