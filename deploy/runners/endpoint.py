"""A running KServe-v2 server as a runner: our ``serve``, or NGC Triton serving a repository from ``triton``.

``EndpointRunner`` sends the batch as ``input`` (FP32) over HTTP or gRPC (``tritonclient``) and returns
the model's outputs, so ``validate --endpoint`` compares a served model with PyTorch through the same loop
as a file. ``describe_endpoint`` reads the model's metadata from the server first and refuses what is not
ConvMLP's I/O (one FP32 ``[-1, 3, -1, -1]`` input; one ``[-1, classes]`` output, or f1..f4 feature maps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import BackendUnavailable, DeployError, OptionError, UnsupportedModel
from .base import Runner

__all__ = ["PROTOCOLS", "Endpoint", "EndpointRunner", "describe_endpoint", "endpoint_facts", "client"]

PROTOCOLS = ("http", "grpc")


@dataclass(frozen=True)
class Endpoint:
    """What a served model is, as its server describes it."""

    url: str
    model: str
    protocol: str
    input_name: str
    output_names: list[str]
    num_classes: int | None  # classifiers
    max_batch: int
    parameters: dict[str, str] = field(default_factory=dict)  # what serve records: variant, precision

    @property
    def precision(self) -> str | None:
        return self.parameters.get("precision") or None

    @property
    def variant(self) -> str | None:
        return self.parameters.get("variant") or None


def client(url: str, protocol: str) -> Any:
    """A ``tritonclient`` client for ``url`` (``host:port``); ``BackendUnavailable`` without tritonclient."""
    if protocol not in PROTOCOLS:
        raise OptionError(f"--protocol must be http or grpc, not {protocol!r}")
    try:
        if protocol == "http":
            import tritonclient.http as tc
        else:
            import tritonclient.grpc as tc
    except ImportError:
        raise BackendUnavailable("--endpoint needs tritonclient: pip install 'convmlp-deploy[serve]'") from None
    return tc.InferenceServerClient(url)


def _first(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:240]


def describe_endpoint(url: str, model: str, protocol: str = "http") -> Endpoint:
    """Ask the server at ``url`` what ``model`` is. ``DeployError`` (exit 1) for a server that does not answer
    or has no such model; ``UnsupportedModel`` (exit 2) for a model whose I/O is not ConvMLP's."""
    c = client(url, protocol)
    try:
        live = c.is_server_live()
    except Exception as exc:  # connection refused, DNS, TLS...
        raise DeployError(f"no KServe-v2 server answers at {url} over {protocol} ({_first(exc)})") from None
    if not live:
        raise DeployError(f"the server at {url} is not live")
    try:
        ready = c.is_model_ready(model)
    except Exception:
        ready = False
    if not ready:
        raise DeployError(f"the server at {url} has no ready model {model!r} (see its /v2/repository/index)")
    try:
        meta = c.get_model_metadata(model)
        cfg = c.get_model_config(model)
    except Exception as exc:
        raise DeployError(f"{url}: cannot read model {model!r}'s metadata ({_first(exc)})") from None
    if protocol == "grpc":
        from google.protobuf.json_format import MessageToDict

        meta = MessageToDict(meta, preserving_proto_field_name=True)
        cfg = MessageToDict(cfg, preserving_proto_field_name=True).get("config", {})
    inputs, outputs = meta.get("inputs", []), meta.get("outputs", [])
    max_batch = int(cfg.get("max_batch_size", 0) or 0)

    def dims(t: dict[str, Any]) -> list[int]:
        shape = [int(d) for d in t.get("shape", [])]
        return shape if max_batch == 0 else [-1, *shape] if len(shape) and shape[0] != -1 else shape

    found = ", ".join(f"{t.get('name')} {t.get('datatype')} {dims(t)}" for t in inputs + outputs)
    if len(inputs) != 1 or inputs[0].get("datatype") != "FP32" or len(dims(inputs[0])) != 4 or dims(inputs[0])[1] != 3:
        raise UnsupportedModel(f"{model} at {url} is not a ConvMLP model: one FP32 [batch, 3, H, W] input is expected, "
                               f"found {found}")
    shapes = [dims(t) for t in outputs]
    if len(outputs) == 1 and len(shapes[0]) == 2 and shapes[0][1] > 0:
        classes: int | None = shapes[0][1]
    elif outputs and all(len(s) == 4 for s in shapes):
        classes = None
    else:
        raise UnsupportedModel(f"{model} at {url} is not a ConvMLP model: outputs {found}")
    params = {k: (v.get("string_value", "") if isinstance(v, dict) else str(v))
              for k, v in (cfg.get("parameters") or {}).items()}
    params = {k.removeprefix("convmlp_"): v for k, v in params.items() if k.startswith("convmlp_")}
    return Endpoint(url, model, protocol, inputs[0]["name"], [t["name"] for t in outputs], classes, max_batch, params)


def endpoint_facts(endpoint: Endpoint, *, variant: str | None = None, precision: str | None = None) -> Any:
    """The record (``deploy.modelfile.ModelFacts``, format ``endpoint``) of a served model: its I/O as the
    server says, its precision from ``precision`` or the server's config (``serve`` publishes
    ``convmlp_precision``, the precision that runs; else fp32), its variant from ``variant`` or the
    server's config (``convmlp_variant``)."""
    from convmlp import PRETRAINED_CFGS

    from ..modelfile import ModelFacts, TensorFacts
    from ..precision import canonical, least_exact

    v = variant or endpoint.variant
    said = precision or endpoint.precision  # serve publishes what runs: "bf16", "int8+bf16" (gated as int8)
    gate = least_exact(*(canonical(part) for part in said.split("+"))) if said else "fp32"
    kind = "classifier" if endpoint.num_classes else "features"
    outputs = ((TensorFacts(endpoint.output_names[0], "float32", (-1, endpoint.num_classes)),) if endpoint.num_classes
               else tuple(TensorFacts(n, "float32", (-1, -1, -1, -1)) for n in endpoint.output_names))
    recorded = {"kind", "num_classes"} | ({"precision"} if precision or endpoint.precision else set())
    return ModelFacts(
        path=None, format="endpoint", kind=kind, precision=gate,
        inputs=(TensorFacts(endpoint.input_name, "float32", (-1, 3, -1, -1)),), outputs=outputs,
        preprocessing=PRETRAINED_CFGS[v or "s"], variant=v, num_classes=endpoint.num_classes,
        recorded=frozenset(recorded | ({"variant"} if v else set())),
        metadata={"endpoint": f"{endpoint.protocol}://{endpoint.url}/{endpoint.model}"},
    )


class EndpointRunner(Runner):
    """Inference on a served model; one client per runner (tritonclient's clients are not shared across
    threads here: give each thread its own runner)."""

    concurrent = False

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.name = f"endpoint[{endpoint.protocol}://{endpoint.url}/{endpoint.model}]"
        self._client: Any = None
        self._module: Any = None
        self._out: dict[str, np.ndarray] = {}

    @property
    def output_names(self) -> list[str]:
        return list(self.endpoint.output_names)

    def activate(self) -> None:
        self._client = client(self.endpoint.url, self.endpoint.protocol)
        if self.endpoint.protocol == "http":
            import tritonclient.http as module
        else:
            import tritonclient.grpc as module
        self._module = module

    def deactivate(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None

    def load_input(self, x: np.ndarray) -> Any:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.endpoint.max_batch and x.shape[0] > self.endpoint.max_batch:
            raise OptionError(f"batch {x.shape[0]} is above the served model's max_batch_size {self.endpoint.max_batch}")
        inp = self._module.InferInput(self.endpoint.input_name, list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        return inp

    def run(self, handle: Any) -> None:
        outputs = [self._module.InferRequestedOutput(n) for n in self.endpoint.output_names]
        try:
            result = self._client.infer(self.endpoint.model, [handle], outputs=outputs)
        except Exception as exc:
            raise DeployError(f"{self.endpoint.url} refused the request: {_first(exc)}") from None
        self._out = {n: np.asarray(result.as_numpy(n), dtype=np.float32) for n in self.endpoint.output_names}

    def fetch(self) -> dict[str, np.ndarray]:
        return self._out
