"""Test kits that tests/ and benchmarks/ share: seeded tiny bundles (`bundles`) and the reliability
harness (`reliability`).

Why in the package and not in tests/: benchmarks/reliability.py runs the same trials as the fast
tests with larger counts, and imported tests' private files through sys.path to do so. Nothing in
the product imports this package.

It ships with the runtime, so it keeps the runtime's import graph: importing it (or `bundles`, or
`reliability`) imports neither torch nor uem.train / uem.export (tests/test_engine_imports.py).
What needs more imports it inside the function that needs it: `bundles.make_encoder` the onnx
package (the train extra), `bundles.make_aligned_bundle` uem.export.align, and
`reliability.make_tiny_run` torch and uem.train.
"""
