"""Dataset converters (raw native formats -> canonical format) and the synthetic generator."""
