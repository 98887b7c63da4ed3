"""A plugin that defines nothing: fallback metadata, no args, predict 501."""
