"""Stand-ins for what tests cannot have on this machine (an NVIDIA GPU)."""
