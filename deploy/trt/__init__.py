"""Build-time TensorRT code: the builder, and what version and GPU are here.

Importing this package does not import TensorRT; ``build_engine`` does, and says
how to install it where it is missing. The engine's sidecar and shape profiles are
model-file facts (``deploy.modelfile.engine``, ``deploy.modelfile.profiles``); the
run-time side is ``deploy.runners.tensorrt``.
"""
