"""Test kits that tests/ and benchmarks/ share: seeded tiny bundles (`bundles`) and the reliability
harness (`reliability`).

Why in the package and not in tests/: benchmarks/reliability.py runs the same trials as the fast
tests with larger counts, and imported tests' private files through sys.path to do so. Nothing in
the product imports this package; `bundles` needs the onnx package (the train extra) to write its
encoder, `reliability.make_tiny_run` needs torch.
"""
