"""Parsers turn a model's text into fields (`XMLParser`, `ThinkParser`) and offer a
strict format reward; the base `Parser` reads the last reply as the answer.
`lmgym.parsers.tool_calls` reads tool calls out of raw model text in the formats models
write them (Hermes, Qwen3, Llama 3, Mistral), for the training engines, which sample
text where an API server would have parsed the calls itself."""

from lmgym.parsers.parser import Parser, last_assistant_text
from lmgym.parsers.think import ThinkParser
from lmgym.parsers.xml import XMLParser

__all__ = ["Parser", "ThinkParser", "XMLParser", "last_assistant_text"]
