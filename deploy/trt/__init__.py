"""Build-time TensorRT code: shape profiles, the engine's sidecar manifest, the builder.

Importing this package does not import TensorRT; ``build_engine`` does, and says
how to install it where it is missing. The run-time side is ``deploy.runners.tensorrt``.
"""

from .manifest import (
    EngineManifest,
    check_compatible,
    manifest_path,
    max_batch,
    read_manifest,
    write_manifest,
)
from .profiles import DEFAULT_PROFILE, Shape, ShapeProfile, parse_shape, select_profile, validation_shapes

__all__ = [
    "DEFAULT_PROFILE",
    "EngineManifest",
    "Shape",
    "ShapeProfile",
    "check_compatible",
    "manifest_path",
    "max_batch",
    "parse_shape",
    "read_manifest",
    "select_profile",
    "validation_shapes",
    "write_manifest",
]
