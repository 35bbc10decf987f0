"""How a rollout talks to a model. Environments see only this interface, so the same
environment runs against an HTTP server (`OpenAIClient`) or a training engine's client
(`lmgym.train.engines`)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from lmgym.types import Messages, ModelResponse


@runtime_checkable
class ModelClient(Protocol):
    async def chat(
        self,
        messages: Messages,
        *,
        model: str,
        sampling: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> ModelResponse:
        """One chat completion. Raises a `lmgym.errors.ModelError` when it fails for good."""
        ...

    async def aclose(self) -> None: ...
