"""What a plugin is: discovery, the v2 plugin interface and its wrapper."""
