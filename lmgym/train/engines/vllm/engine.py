"""`VLLMEngine`: rollouts on a vLLM server, and the trainer's weights published to it.

`publish(model, version)` makes `model`'s weights those of new requests:

- a peft LoRA model: its adapter is saved to RUN_DIR/adapters/vN and loaded at runtime
  (`POST /v1/load_lora_adapter`, allowed by `VLLM_ALLOW_RUNTIME_LORA_UPDATING`) under the
  name `policy-vN`; new requests use that name and the oldest loaded versions beyond
  `keep_versions` are unloaded (requests in flight on them finish normally).
- any other model: its weights are saved to RUN_DIR/weights/vN (tied ones under each
  name, see `save_weights`) and reloaded in place, without a restart, through the dev
  endpoints (`VLLM_SERVER_DEV_MODE=1`): `/pause` (mode "keep": requests in flight are
  frozen, not dropped), `/collective_rpc` calling the workers' `reload_weights(
  weights_path=...)`, `/reset_prefix_cache` (KV computed with the old weights must not be
  reused; running requests are recomputed under the new ones), `/resume`. A sequence in
  flight thus continues under the new weights; each token's logprob is still the one it
  was sampled with, so the loss's importance ratio is right.

The server holds its own copy of the weights, so the engine is its own snapshot for
asynchronous generation: a publish reaches batches in flight at once, which the per-token
importance weights account for.

Several trainer ranks (`lmgym train --nproc N`): each rank's engine samples from one
server (`base_url`), and only rank 0's engine has `servers` to publish to (all of them).
`publish` is called on every rank: under FSDP every rank takes part in gathering the
weights to rank 0, rank 0 writes and loads them, and a barrier holds the other ranks until
every server has the new version; then each rank names it in its own requests. The files
a publish writes are read by the servers, so RUN_DIR must be on a filesystem they share.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import orjson

from lmgym.clients.http import http as _http
from lmgym.parsers.tool_calls import ToolFormat
from lmgym.train.distributed import World, barrier
from lmgym.train.engines.base import RolloutEngine
from lmgym.train.engines.vllm.client import VLLMClient
from lmgym.train.engines.vllm.server import BASE_NAME, VLLMServer, VLLMServerError

logger = logging.getLogger(__name__)


def save_weights(model: Any, path: Path) -> Path:
    """Every weight of `model` under its own name, in one safetensors file, with its config.

    Unlike `save_pretrained`, tied weights are written under each name: vLLM's in-place
    reload (0.32) fills each layer from the checkpoint and puts the old tensors back into
    a layer the checkpoint does not mention, so a tied output layer saved only as the
    input embedding would keep the old weights (measured: logprobs off by 1.6)."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(path)
    tensors, seen = {}, set()
    for name, tensor in model.state_dict().items():
        storage = tensor.data_ptr()
        tensor = tensor.detach().cpu()
        # safetensors refuses two names for one storage
        tensors[name] = tensor.clone() if storage in seen else tensor.contiguous()
        seen.add(storage)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def is_lora_model(model: Any) -> bool:
    """A peft model: publish its adapter, not its weights."""
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def served_name(lora: bool, version: int) -> str:
    """The name requests give for policy `version`: its adapter's, or the reloaded base."""
    return f"policy-v{version}" if lora else BASE_NAME


def whole_policy(model: Any) -> Any:
    """The model to publish: itself, or under FSDP an unsharded copy on rank 0 (None on
    the other ranks), gathered with every rank taking part."""
    from lmgym.train.fsdp import is_sharded

    if not is_sharded(model):
        return model
    from lmgym.train.sharded_checkpoint import plain_copy

    return plain_copy(model)


class VLLMEngine(RolloutEngine):
    """Build it on a server already running (`VLLMEngine(server.url, tokenizer, run_dir)`),
    or hand it the `VLLMServer` it owns (`server=`), which `close()` stops. The server must
    have been started on the weights the trainer starts from. It samples from `base_url`
    and publishes to `servers` (default: that one; none on a rank that waits for rank 0 to
    publish, see the module docstring)."""

    def __init__(
        self,
        base_url: str,
        tokenizer: Any,
        run_dir: str | Path,
        *,
        keep_versions: int = 2,
        timeout: float = 600.0,
        server: VLLMServer | None = None,
        transport: Any = None,  # an httpx transport, for tests
        tool_format: ToolFormat | None = None,
        servers: list[str] | None = None,
        world: World = World(),
    ):
        if keep_versions < 1:
            raise ValueError(f"keep_versions must be at least 1, got {keep_versions}")
        self.base_url = base_url.rstrip("/")
        self.servers = [url.rstrip("/") for url in (servers if servers is not None else [base_url])]
        self.world = world
        self.tokenizer = tokenizer
        self.run_dir = Path(run_dir)
        self.keep_versions = keep_versions
        self.server = server
        self._client = VLLMClient(self.base_url, tokenizer, timeout=timeout, transport=transport, tool_format=tool_format)
        self.version = 0  # the version new requests sample from; 0 is the starting weights
        self.publish_s: float | None = None  # how long the last publish took
        self._control = _http.Client(timeout=timeout, transport=transport)
        self._adapters: list[tuple[str, Path]] = []  # loaded LoRA versions, oldest first
        self._weights: list[Path] = []

    @property
    def client(self) -> VLLMClient:
        return self._client

    @property
    def model_name(self) -> str:
        """The served name new requests go to."""
        return self.client.model

    def publish(self, model: Any, version: int) -> None:
        """Make `model`'s weights those of new requests: its LoRA adapter for a peft model,
        else all its weights (see the module docstring). Returns once every server uses
        them; every rank calls it."""
        started = time.perf_counter()
        policy = whole_policy(model)
        if self.servers and policy is not None:
            if is_lora_model(policy):
                self._publish_adapter(policy, version)
            else:
                self._publish_weights(policy, version)
        barrier(self.world)  # the other ranks sample only once every server has this version
        self.client.model = served_name(is_lora_model(model), version)
        self.version = version
        self.publish_s = time.perf_counter() - started
        logger.info("published version %d to vLLM in %.2fs", version, self.publish_s)

    def _publish_adapter(self, model: Any, version: int) -> None:
        name, path = f"policy-v{version}", self.run_dir / "adapters" / f"v{version}"
        shutil.rmtree(path, ignore_errors=True)
        model.save_pretrained(path)  # a peft model saves the adapter only
        for url in self.servers:
            # in place: publishing a version again (after a resume) replaces it instead of failing
            self._post(url, "/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(path), "load_inplace": True})
        self._adapters = [(n, p) for n, p in self._adapters if n != name] + [(name, path)]
        while len(self._adapters) > self.keep_versions:
            old_name, old_path = self._adapters.pop(0)
            for url in self.servers:
                self._post(url, "/v1/unload_lora_adapter", {"lora_name": old_name}, missing_ok=True)
            shutil.rmtree(old_path, ignore_errors=True)

    def _publish_weights(self, model: Any, version: int) -> None:
        path = self.run_dir / "weights" / f"v{version}"
        shutil.rmtree(path, ignore_errors=True)
        save_weights(model, path)
        for url in self.servers:
            self._reload(url, path)
        for old in self._weights:  # the reload read them in full: no longer needed
            if old != path:
                shutil.rmtree(old, ignore_errors=True)
        self._weights = [path]

    def _reload(self, url: str, path: Path) -> None:
        """One server's in-place reload of the weights saved at `path`."""
        self._post(url, "/pause", params={"mode": "keep"})
        try:
            self._post(url, "/collective_rpc", {"method": "reload_weights", "kwargs": {"weights_path": str(path)}})
            reset = self._post(url, "/reset_prefix_cache", params={"reset_running_requests": "true"})
            if not orjson.loads(reset.content).get("success"):
                raise VLLMServerError(f"vLLM at {url} could not reset its prefix cache after reloading the weights")
        finally:
            self._post(url, "/resume")

    def _post(
        self, url: str, path: str, body: dict[str, Any] | None = None, params: dict[str, str] | None = None, *, missing_ok: bool = False
    ) -> Any:
        try:
            response = self._control.post(f"{url}{path}", json=body, params=params)
        except _http.TransportError as exc:
            raise VLLMServerError(f"POST {url}{path}: cannot reach the vLLM server: {exc}") from None
        if response.status_code == 404 and missing_ok:
            return response
        if response.status_code in (404, 405):
            raise VLLMServerError(
                f"POST {path} answered HTTP {response.status_code}: publishing needs vLLM started with "
                f"VLLM_SERVER_DEV_MODE=1 and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True (VLLMServer sets both): "
                f"{response.text[:300]}"
            )
        if response.status_code != 200:
            raise VLLMServerError(f"POST {path} failed (HTTP {response.status_code}): {response.text[:500]}")
        return response

    def refresh(self) -> None:
        self._client.reset()

    def close(self) -> None:
        """Close the control connection and stop the server this engine launched."""
        self._control.close()
        server, self.server = self.server, None
        if server is not None:
            server.stop()

    def __enter__(self) -> VLLMEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
