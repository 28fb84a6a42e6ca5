"""Performance measurements: `uemctl bench` (encoder, end-to-end query, engine footprint) and the
index-scaling benchmark (benchmarks/index_scaling.py).

Runtime dependencies only (numpy, onnxruntime, hnswlib, pillow); torch is imported lazily and only
for the optional torch-eager column. Every timing is a median over interleaved repetitions so that
ratios taken in one run stay meaningful on a shared, noisy machine.
"""
