"""Speed and memory of the runtime: what `uemctl bench` measures (encoder, end-to-end query, engine
footprint) and the index-scaling benchmark (benchmarks/index_scaling.py) uses.

Named `perf`, not `bench`: benchmarks/ at the repository root holds the scripts that measure retrieval
quality and record RESULTS.md; this package measures cost only (the command stays `uemctl bench`).

Runtime dependencies only (numpy, onnxruntime, hnswlib, pillow); torch is imported lazily and only
for the optional torch-eager column. Every timing is a median over interleaved repetitions so that
ratios taken in one run stay meaningful on a shared, noisy machine.
"""
