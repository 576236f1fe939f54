"""Runtime engines behind one interface: PyTorch eager, ONNX Runtime (FP32/INT8/FP16), TensorRT."""
