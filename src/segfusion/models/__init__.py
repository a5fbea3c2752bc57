"""Models: the IMP operator, semantic heads, Mask R-CNN + head, and the one builder."""
