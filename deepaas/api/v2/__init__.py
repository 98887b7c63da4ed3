"""The DEEPaaS v2 routes."""
