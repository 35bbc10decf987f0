"""Parsers turn a model's text into fields (`XMLParser`, `ThinkParser`) and offer a
strict format reward; the base `Parser` reads the last reply as the answer."""

from lmgym.parsers.parser import Parser, last_assistant_text
from lmgym.parsers.think import ThinkParser
from lmgym.parsers.xml import XMLParser

__all__ = ["Parser", "ThinkParser", "XMLParser", "last_assistant_text"]
