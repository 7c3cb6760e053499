"""ConvMLP: Hierarchical Convolutional MLPs for Vision.

Li, Hassani, Walton, Shi (2021), https://arxiv.org/abs/2109.04454
Official code: https://github.com/SHI-Labs/Convolutional-MLPs

    @article{li2021convmlp,
      title={ConvMLP: Hierarchical Convolutional MLPs for Vision},
      author={Jiachen Li and Ali Hassani and Steven Walton and Humphrey Shi},
      year={2021}, eprint={2109.04454}, archivePrefix={arXiv}, primaryClass={cs.CV}
    }

Module and parameter names are the official state-dict keys, so the official
checkpoints load into this file unchanged (see ``checkpoint_filter_fn``).

The Conv-MLP blocks run channels-last (NHWC) exactly as the official code does:
``nn.Linear`` then acts on the channel dimension and ``nn.LayerNorm`` normalises
over channels; only the depthwise ``connect`` conv and the downsampling convs
permute to NCHW and back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "ConvMLP",
    "ConvMLPArch",
    "ConvTokenizer",
    "ConvStage",
    "ConvMLPBlock",
    "BasicStage",
    "DropPath",
    "FeatureInfo",
    "ARCHS",
]


# --------------------------------------------------------------------------- building blocks


class DropPath(nn.Module):
    """Stochastic depth per sample; the identity in eval mode."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class ConvTokenizer(nn.Module):
    """Three 3x3 Conv-BN-ReLU (first with stride 2) then a 3x3/2 max pool: stride 4.

    Keys: ``block.{0,3,6}`` convs, ``block.{1,4,7}`` BatchNorms, ``block.9`` the pool.
    """

    def __init__(self, embedding_dim: int = 64) -> None:
        super().__init__()
        half = embedding_dim // 2
        self.block = nn.Sequential(
            nn.Conv2d(3, half, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, half, kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, embedding_dim, kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(embedding_dim),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1, dilation=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ConvStage(nn.Module):
    """Residual bottleneck blocks (1x1, 3x3, 1x1 Conv-BN-ReLU) then a 3x3/2 conv with bias."""

    def __init__(
        self,
        num_blocks: int = 2,
        embedding_dim_in: int = 64,
        hidden_dim: int = 128,
        embedding_dim_out: int = 128,
    ) -> None:
        super().__init__()
        self.conv_blocks = nn.ModuleList()
        for _ in range(num_blocks):
            self.conv_blocks.append(
                nn.Sequential(
                    nn.Conv2d(embedding_dim_in, hidden_dim, kernel_size=1, bias=False),
                    nn.BatchNorm2d(hidden_dim),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(hidden_dim, hidden_dim, kernel_size=3, padding=1, bias=False),
                    nn.BatchNorm2d(hidden_dim),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(hidden_dim, embedding_dim_in, kernel_size=1, bias=False),
                    nn.BatchNorm2d(embedding_dim_in),
                    nn.ReLU(inplace=True),
                )
            )
        self.downsample = nn.Conv2d(
            embedding_dim_in, embedding_dim_out, kernel_size=3, stride=2, padding=1
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.conv_blocks:
            x = x + block(x)
        return self.downsample(x)


class Mlp(nn.Module):
    """Channel MLP: Linear -> GELU (exact) -> Linear."""

    def __init__(self, embedding_dim_in: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        hidden_dim = hidden_dim or embedding_dim_in
        self.fc1 = nn.Linear(embedding_dim_in, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, embedding_dim_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ConvMLPBlock(nn.Module):
    """Conv-MLP block on NHWC tensors (``ConvMLPStage`` in the official code).

    ``x + mlp1(norm1(x))``, then ``connect(connect_norm(x))`` (depthwise 3x3, no
    residual), then ``x + mlp2(norm2(x))``.
    """

    def __init__(self, embedding_dim: int, dim_feedforward: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.channel_mlp1 = Mlp(embedding_dim, dim_feedforward)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.connect = nn.Conv2d(
            embedding_dim,
            embedding_dim,
            kernel_size=3,
            stride=1,
            padding=1,
            groups=embedding_dim,
            bias=False,
        )
        self.connect_norm = nn.LayerNorm(embedding_dim)
        self.channel_mlp2 = Mlp(embedding_dim, dim_feedforward)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.channel_mlp1(self.norm1(x)))
        x = self.connect(self.connect_norm(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = x + self.drop_path(self.channel_mlp2(self.norm2(x)))
        return x


class ConvDownsample(nn.Module):
    """3x3 stride-2 conv with bias between Conv-MLP stages, NHWC in and out."""

    def __init__(self, embedding_dim_in: int, embedding_dim_out: int) -> None:
        super().__init__()
        self.downsample = nn.Conv2d(
            embedding_dim_in, embedding_dim_out, kernel_size=3, stride=2, padding=1
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


# --------------------------------------------------------------------------- stage


class BasicStage(nn.Module):
    """A Conv-MLP stage: ``blocks`` then an optional ``downsample_mlp`` to the next width."""

    def __init__(
        self,
        num_blocks: int,
        embedding_dims: Sequence[int],
        mlp_ratio: float = 1.0,
        stochastic_depth_rate: float = 0.1,
        downsample: bool = True,
    ) -> None:
        super().__init__()
        dpr = torch.linspace(0, stochastic_depth_rate, num_blocks).tolist()
        dim = embedding_dims[0]
        self.blocks = nn.ModuleList(
            ConvMLPBlock(dim, int(dim * mlp_ratio), drop_path=rate) for rate in dpr
        )
        self.downsample_mlp: nn.Module = (
            ConvDownsample(dim, embedding_dims[1]) if downsample else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample_mlp(x)


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class ConvMLPArch:
    """Architecture numbers of one variant (nothing about weights)."""

    blocks: tuple[int, ...]
    dims: tuple[int, ...]
    mlp_ratios: tuple[float, ...]
    channels: int
    n_conv_blocks: int


ARCHS: dict[str, ConvMLPArch] = {
    "s": ConvMLPArch((2, 4, 2), (128, 256, 512), (2, 2, 2), channels=64, n_conv_blocks=2),
    "m": ConvMLPArch((3, 6, 3), (128, 256, 512), (3, 3, 3), channels=64, n_conv_blocks=3),
    "l": ConvMLPArch((4, 8, 3), (192, 384, 768), (3, 3, 3), channels=96, n_conv_blocks=3),
}


@dataclass(frozen=True)
class FeatureInfo:
    """One feature map of the backbone: output name, channels and stride w.r.t. the input."""

    name: str
    num_chs: int
    reduction: int
    module: str


class ConvMLP(nn.Module):
    """ConvMLP classifier, headless trunk or F1..F4 feature pyramid.

    * ``classifier_head=True``: ``forward`` returns logits ``[B, num_classes]``.
    * ``classifier_head=False``: returns the last stage's NHWC map (official behaviour).
    * ``features_only=True``: returns ``(f1, f2, f3, f4)`` NCHW maps at strides 4, 8,
      16, 32, as the official mmdet/mmseg backbones do; no ``norm``/``head``.

    Works at any input size >= 32 x 32 (odd and non-square sizes included).
    """

    min_input_size = 32

    def __init__(
        self,
        blocks: Sequence[int],
        dims: Sequence[int],
        mlp_ratios: Sequence[float],
        channels: int = 64,
        n_conv_blocks: int = 3,
        classifier_head: bool = True,
        num_classes: int = 1000,
        features_only: bool = False,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        if not len(blocks) == len(dims) == len(mlp_ratios) == 3:
            raise ValueError("blocks, dims and mlp_ratios must each have 3 entries")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes if classifier_head and not features_only else 0
        self.num_features = dims[-1]
        self.features_only = features_only

        self.tokenizer = ConvTokenizer(embedding_dim=channels)
        self.conv_stages = ConvStage(
            n_conv_blocks, embedding_dim_in=channels, hidden_dim=dims[0], embedding_dim_out=dims[0]
        )
        self.stages = nn.ModuleList(
            BasicStage(
                num_blocks=blocks[i],
                embedding_dims=dims[i : i + 2],
                mlp_ratio=mlp_ratios[i],
                stochastic_depth_rate=drop_path_rate,
                downsample=i + 1 < len(blocks),
            )
            for i in range(len(blocks))
        )
        self.feature_info = [
            FeatureInfo("f1", channels, 4, "tokenizer"),
            FeatureInfo("f2", dims[0], 8, "conv_stages"),
            FeatureInfo("f3", dims[1], 16, "stages.0"),
            FeatureInfo("f4", dims[2], 32, "stages.2"),
        ]
        self.norm: nn.Module | None = None
        self.head: nn.Module | None = None
        if self.num_classes:
            self.norm = nn.LayerNorm(dims[-1])
            self.head = nn.Linear(dims[-1], num_classes)
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Input NCHW image batch -> last stage's NHWC map (stride 32)."""
        x = self.conv_stages(self.tokenizer(x)).permute(0, 2, 3, 1)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """NHWC map -> logits: LayerNorm over channels, mean over positions, Linear."""
        assert self.norm is not None and self.head is not None
        x = self.norm(x.flatten(1, 2))
        return self.head(x.mean(dim=1))

    def forward_pyramid(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Input NCHW -> (f1, f2, f3, f4) NCHW feature maps (official mmdet order)."""
        f1 = self.tokenizer(x)
        f2 = self.conv_stages(f1)
        x = self.stages[0](f2.permute(0, 2, 3, 1))
        f3 = x.permute(0, 3, 1, 2).contiguous()
        x = self.stages[2](self.stages[1](x))
        f4 = x.permute(0, 3, 1, 2).contiguous()
        return f1, f2, f3, f4

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if self.features_only:
            return self.forward_pyramid(x)
        x = self.forward_features(x)
        if self.head is None:
            return x
        return self.forward_head(x)


def _init_weights(m: nn.Module) -> None:
    """The official initialisation (trunc-normal linears, Kaiming convs, unit norms)."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
