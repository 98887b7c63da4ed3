"""A plugin whose import raises (a missing weights file, say)."""

raise RuntimeError("weights.h5 not found")
