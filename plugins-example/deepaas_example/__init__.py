"""Example DEEPaaS plugins: ``demo`` (a module) and ``demo_class`` (a class)."""
