"""The runtime side: runners (PyTorch, onnxruntime, TensorRT), validation against PyTorch,
TensorRT builds (``deploy.trt``), benchmarks (``deploy.bench``), Triton and ``predict``.

TensorRT and CUDA are imported lazily; this package imports on a CPU-only machine.
"""
