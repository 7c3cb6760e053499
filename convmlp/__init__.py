"""ConvMLP (Li et al., 2021) for deployment: the faithful model, its weights and its cost.

    >>> import convmlp
    >>> model = convmlp.create_model("s", weights="convmlp_s_imagenet.pth").eval()
    >>> backbone = convmlp.create_model("l", features_only=True)  # F1..F4 for det/seg
"""

from .factory import VARIANTS, convmlp_l, convmlp_m, convmlp_s, create_model, synthetic_label
from .model import ARCHS, ConvMLP, ConvMLPArch, FeatureInfo
from .weights import PRETRAINED_CFGS, CheckpointError, PretrainedCfg, checkpoint_filter_fn

__version__ = "0.1.0"

__all__ = [
    "ARCHS",
    "PRETRAINED_CFGS",
    "VARIANTS",
    "CheckpointError",
    "ConvMLP",
    "ConvMLPArch",
    "FeatureInfo",
    "PretrainedCfg",
    "__version__",
    "checkpoint_filter_fn",
    "convmlp_l",
    "convmlp_m",
    "convmlp_s",
    "create_model",
    "synthetic_label",
]
