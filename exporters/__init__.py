"""ONNX export, graph optimisation, quantisation and the parity gate. Run: python -m exporters --help."""
