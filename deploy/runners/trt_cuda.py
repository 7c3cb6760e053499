"""TensorRT's tensors in PyTorch's CUDA memory: the CUDA operations the TensorRT runner needs (streams,
buffers, graph capture; ``TorchCuda``, which the tests replace with a CPU fake) and the conversions of
TensorRT dims and data types to PyTorch's."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from ..errors import DeployError
from ..modelfile.profiles import Shape

if TYPE_CHECKING:
    import tensorrt as trt
    import torch

__all__ = ["TorchCuda", "shape4", "dims_of", "torch_dtype"]


class TorchCuda:
    """The CUDA operations the runner needs (stream, memory, graph capture), done with PyTorch."""

    def available(self) -> bool:
        import torch

        return bool(torch.cuda.is_available())

    def new_stream(self) -> torch.cuda.Stream:
        import torch

        return torch.cuda.Stream()

    def on(self, stream: torch.cuda.Stream) -> AbstractContextManager[Any]:
        """Make ``stream`` current for PyTorch work in a ``with`` block."""
        import torch

        return torch.cuda.stream(stream)

    def empty(self, numel: int, dtype: torch.dtype, stream: torch.cuda.Stream) -> torch.Tensor:
        """A flat device tensor allocated on ``stream`` (the caching allocator then reuses a
        dropped buffer only after the work already queued on that stream)."""
        import torch

        with torch.cuda.stream(stream):
            return torch.empty(numel, dtype=dtype, device="cuda")

    def wait_current(self, stream: torch.cuda.Stream) -> None:
        """Make ``stream`` wait for the work queued so far on PyTorch's current stream."""
        import torch

        stream.wait_stream(torch.cuda.current_stream())

    def new_graph(self) -> torch.cuda.CUDAGraph:
        import torch

        return torch.cuda.CUDAGraph()

    def capture(self, graph: torch.cuda.CUDAGraph, stream: torch.cuda.Stream) -> AbstractContextManager[Any]:
        """Capture the work enqueued on ``stream`` into ``graph``.

        Thread-local capture mode (as trtexec uses): CUDA calls of other threads (other
        runners) do not invalidate this capture; this runner's own lock keeps its stream to itself.
        """
        import torch

        return torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local")

    def release(self, graph: torch.cuda.CUDAGraph) -> None:
        """Destroy ``graph`` now (before the context and memory it points at go)."""
        graph.reset()

    def to_host(self, tensor: torch.Tensor) -> torch.Tensor:
        """A host copy of ``tensor``, enqueued on the current stream."""
        return tensor.to("cpu", non_blocking=True)


def shape4(dims: Any) -> Shape:
    values = tuple(int(d) for d in dims)
    if len(values) != 4:
        raise DeployError(f"expected a 4-D NCHW shape, got {list(values)}")
    return values[0], values[1], values[2], values[3]


def dims_of(dims: trt.Dims) -> tuple[int, ...]:
    return tuple(int(dims[i]) for i in range(len(dims)))


def torch_dtype(dtype: trt.DataType) -> torch.dtype:
    import tensorrt as trt
    import torch

    table = {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.BF16: torch.bfloat16,
        trt.DataType.INT32: torch.int32,
        trt.DataType.INT64: torch.int64,
        trt.DataType.INT8: torch.int8,
        trt.DataType.UINT8: torch.uint8,
        trt.DataType.BOOL: torch.bool,
    }
    if dtype not in table:
        raise DeployError(f"engine tensor type {dtype.name} is not supported by this runner")
    return table[dtype]
