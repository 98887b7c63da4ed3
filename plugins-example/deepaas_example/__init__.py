"""Example DEEPaaS plugins: ``demo`` (a module), ``demo_class`` (a class),
``demo_torch`` (PyTorch) and ``demo_onnx`` (an ONNX image classifier)."""
