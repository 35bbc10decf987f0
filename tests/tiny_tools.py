"""A tiny Llama whose character vocabulary can write JSON tool calls (tiny-llama's own
cannot: braces and quotes are unknown to it, see `lmgym.train.models.TOOL_ALPHABET`)."""

from __future__ import annotations

from pathlib import Path

from lmgym.train.models import TOOL_ALPHABET, char_tokenizer, save_model, tiny_llama


def tool_tokenizer():
    return char_tokenizer(TOOL_ALPHABET)


def save_tool_model(path: Path) -> Path:
    """The model and tokenizer saved to `path`, for `model.name = str(path)`."""
    tokenizer = tool_tokenizer()
    return save_model(tiny_llama(tokenizer, max_position_embeddings=2048), tokenizer, path)
