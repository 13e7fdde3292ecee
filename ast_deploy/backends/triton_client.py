"""Client backend: a model served by Triton Inference Server (an ``ast-serve repo`` front model),
reached with ``tritonclient`` (the ``[serving]`` extra, imported when a URL is opened).

    Runner("http://127.0.0.1:8000/derain")     # HTTP (https:// too)
    Runner("grpc://127.0.0.1:8001/derain")     # gRPC; ".../derain/2" picks model version 2

The server plans, pads and tiles: a photo (uint8 or uint16 H x W x 3) goes whole as ``IMAGE`` /
``IMAGE16`` and comes back as the restored photo of the same type; a float image goes as ``INPUT``.
The Runner computes the same plan as the server (the same pure function of the image size, the
protocol, the core model's size range, which the front model's config publishes, and the core's
measured cost per pixel and budget, which the core answers to a cost query) so ``ast-check``
compares a served model with a local one under the plan the server runs; a plan other than the
served protocol (a protocol the caller named, ``tile=``) goes with the request as ``PROTOCOL``,
which the server then runs as named.

Thread safety: each thread gets its own client connection (the HTTP client is not thread-safe).
"""

from __future__ import annotations

import json
import threading
from urllib.parse import urlsplit

import numpy as np

from ..metadata import config_parameters
from .base import Backend, BackendError, ShapeError

SCHEMES = {"http": "http", "https": "http", "grpc": "grpc"}
DEFAULT_PORTS = {"http": 8000, "https": 443, "grpc": 8001}


def is_server_url(source) -> bool:
    return isinstance(source, str) and source.split("://", 1)[0].lower() in SCHEMES and "://" in source


def parse_server_url(url: str) -> tuple[str, str, str, str]:
    """``scheme://host[:port]/MODEL[/VERSION]`` -> (protocol "http"|"grpc", "host:port", model, version)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"{url}: a server URL starts with http://, https:// or grpc://")
    path = [p for p in parts.path.split("/") if p]
    if not parts.hostname or not 1 <= len(path) <= 2:
        raise ValueError(f"{url}: expected {scheme}://HOST:PORT/MODEL (the front model's name, as ast-serve repo "
                         "--name gave it), optionally /VERSION")
    port = parts.port or DEFAULT_PORTS[scheme]
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return SCHEMES[scheme], f"{host}:{port}", path[0], path[1] if len(path) == 2 else ""


def _client_module(protocol: str):
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
    except ImportError as e:
        raise BackendError(f"a server URL needs tritonclient: pip install -e '.[serving]' ({e})") from None
    return module


class TritonClientBackend(Backend):
    """Restores whole images through a served front model, which pads and tiles them: ``run_pixels``
    sends a uint8 / uint16 photo, ``run_protocol`` float images, each with the plan the Runner chose
    when it is not the served protocol; ``budget`` and ``memory_cost`` are the core's."""

    applies_protocol = True

    def __init__(self, url: str, timeout: float = 600.0):
        self.url = url
        self.protocol_kind, self.address, self.model, self.version = parse_server_url(url)
        self.timeout = timeout
        self._module = _client_module(self.protocol_kind)
        self._local = threading.local()
        self._clients, self._lock = [], threading.Lock()
        self.scheme_ssl = url.lower().startswith("https://")
        client = self._client()
        try:
            ready = client.is_model_ready(self.model, self.version)
        except Exception as e:  # connection refused, DNS, TLS: InferenceServerException or OSError
            self.close()
            raise BackendError(f"{url}: cannot reach the server at {self.address}: {e}") from None
        if not ready:
            served = self._served_list(client)
            self.close()  # an open keep-alive connection would hold the server's shutdown
            raise BackendError(f"{url}: the server has no ready model {self.model!r}{served}")
        config = client.get_model_config(self.model, self.version)
        if self.protocol_kind == "grpc":
            from google.protobuf import json_format

            config = json_format.MessageToDict(config.config, preserving_proto_field_name=True)

        params = config_parameters(config)
        if "core_model" not in params:
            raise BackendError(f"{url}: {self.model!r} is not a front model written by ast-serve repo "
                               "(its config has no core_model parameter)")
        self.params = params
        self.size_multiple = int(params["size_multiple"])
        rng = json.loads(params.get("shape_range") or "null")
        # The core model's range: the Runner fits its plan to it exactly as the front model does.
        self.shape_range = None if rng is None else (tuple(rng[0]), tuple(rng[1]))
        self.default_protocol = params["protocol"]
        self.name = f"server:{url}"
        self._served_cost = None

    @property
    def max_batch(self):  # whole images go one per request; the server batches the core's work
        return None

    def _served_list(self, client) -> str:
        try:
            index = client.get_model_repository_index()
            names = [m["name"] if isinstance(m, dict) else m.name
                     for m in (index if isinstance(index, list) else index.models)]
            return f" (it serves: {', '.join(sorted(names))})" if names else ""
        except Exception:
            return ""

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            options = {"ssl": True} if self.scheme_ssl and self.protocol_kind == "http" else {}
            if self.protocol_kind == "http":
                options.update(connection_timeout=self.timeout, network_timeout=self.timeout)
            client = self._module.InferenceServerClient(url=self.address, **options)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def check_batch(self, shape) -> None:
        if len(shape) != 4 or shape[1] != 3 or 0 in shape:
            raise ShapeError(f"{self.name}: expected a float32 batch [B, 3, H, W], got shape {tuple(shape)}")

    def _served_numbers(self):
        """(Cost or None, budget) of the core model: its answer to a cost query (serving.core), asked once;
        (None, inf) from a core that does not answer (the server's own onnxruntime / tensorrt backends)."""
        if self._served_cost is None:
            from ..serving.core import COST_OUTPUT, read_cost_answer

            module, core = self._module, self.params["core_model"]
            b, h, w = self.shape_range[0] if self.shape_range else (1, self.size_multiple, self.size_multiple)
            dtype = np.float16 if self.params.get("core_dtype") == "float16" else np.float32
            probe = module.InferInput(self.params.get("core_input", "input"), [b, 3, h, w],
                                      "FP16" if dtype == np.float16 else "FP32")
            probe.set_data_from_numpy(np.zeros((b, 3, h, w), dtype=dtype))
            try:
                result = self._client().infer(core, [probe], outputs=[module.InferRequestedOutput(COST_OUTPUT)])
                self._served_cost = read_cost_answer(result.as_numpy(COST_OUTPUT))
            except Exception:  # InferenceServerException: a core without the COST output
                self._served_cost = (None, float("inf"))
        return self._served_cost

    @property
    def budget(self) -> float:
        """The memory budget the server plans with (per core instance; inf: unbudgeted)."""
        return self._served_numbers()[1]

    def memory_cost(self):
        """The core's own measured cost (budget.measure_cost takes it instead of probing this process)."""
        return self._served_numbers()[0]

    def _send(self, inputs: list, output: str, protocol) -> np.ndarray:
        module = self._module
        if protocol is not None and str(protocol) != str(self.default_protocol):  # else the server plans it
            inputs.append(module.InferInput("PROTOCOL", [1], "BYTES"))
            inputs[-1].set_data_from_numpy(np.array([str(protocol).encode()], dtype=np.object_))
        options = {"client_timeout": self.timeout} if self.protocol_kind == "grpc" else {}
        try:
            result = self._client().infer(self.model, inputs, model_version=self.version,
                                          outputs=[module.InferRequestedOutput(output)], **options)
        except Exception as e:  # InferenceServerException: the server's own message
            message = e.message() if hasattr(e, "message") and callable(e.message) else str(e)
            raise BackendError(f"{self.url}: {message}") from None
        return result.as_numpy(output)

    def infer_image(self, image: np.ndarray, protocol: str | None = None) -> np.ndarray:
        """One float32 [3, H, W] image -> the restored [3, H, W] (the server's protocol, or ``protocol``)."""
        tensor = self._module.InferInput("INPUT", list(image.shape), "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        return self._send([tensor], "OUTPUT", protocol)

    def run_pixels(self, rgb: np.ndarray, protocol=None) -> np.ndarray:
        """A whole uint8 / uint16 H x W x 3 photo -> the restored photo of the same type (IMAGE / IMAGE16)."""
        name = "IMAGE16" if rgb.dtype == np.uint16 else "IMAGE"
        tensor = self._module.InferInput(name, list(rgb.shape), "UINT16" if name == "IMAGE16" else "UINT8")
        tensor.set_data_from_numpy(np.ascontiguousarray(rgb))
        return self._send([tensor], "OUTPUT_" + name, protocol)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return np.stack([self.infer_image(image) for image in batch])

    def run_protocol(self, batch: np.ndarray, plan) -> np.ndarray:
        self.check_batch(batch.shape)
        return np.stack([self.infer_image(image, str(plan)) for image in batch])

    def close(self) -> None:
        """Close the connections of all threads (an idle keep-alive connection makes the server wait
        up to its exit timeout when it stops)."""
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception:
                pass
        self._local = threading.local()

    def __del__(self):
        if getattr(self, "_clients", None):
            self.close()


def open_server_backend(url: str, **options) -> TritonClientBackend:
    return TritonClientBackend(url, **options)
