"""The runtime side: what a model file is (``deploy.modelfile``), the backend table and loader,
runners (PyTorch, onnxruntime, OpenVINO, TensorRT), validation against PyTorch, TensorRT builds
(``deploy.trt``), benchmarks (``deploy.bench``), Triton, ``predict``, ``evaluate``, and the CLI's
option groups and presentation.

TensorRT and CUDA are imported lazily; this package imports on a CPU-only machine.
"""
