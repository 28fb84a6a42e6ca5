"""Export (torch + onnx + onnxruntime.quantization): a training run -> an int8 bundle for the engine.

onnx.py exports the encoder, quantize.py + biascorrect.py make the int8 model, parity.py checks it,
pipeline.py embeds every domain and writes the bundle (`uemctl export`).
"""
