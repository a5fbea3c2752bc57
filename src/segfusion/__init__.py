"""segfusion: fuse semantic and instance segmentation, reproducibly."""

__version__ = "0.1.0"
