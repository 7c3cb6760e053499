"""ONNX export: PyTorch -> ONNX (FP32, mixed FP16, F1..F4), simplified and validated.

Entry point: ``export.pipeline.run_export(ExportConfig(...))`` (the ``export`` command).
"""
