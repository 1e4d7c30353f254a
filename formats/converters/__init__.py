"""Converters from each source's own format into ODVG dataset directories, one module per source.

This module stays import-light (the command line lists these choices without loading numpy or duckdb).
"""

COCO_SOURCES = ("o365v1", "o365v2", "coco2017", "lvis_v1", "v3det", "custom")  # label-id conventions of convert coco
