"""`lmgym init`: the files of a new environment package, written from templates.

    NAME/
      pyproject.toml         the `lmgym.environments` entry point: `pip install -e` registers it
      MODULE.py              load_environment(): a generated dataset, a parser, a rubric
      README.md              what to edit, how to run and test it
      tests/test_MODULE.py   every eval example end to end against lmgym.testing.ScriptedServer

MODULE is NAME with `_` for `-`. Three kinds differ only in MODULE.py, the scripted
model of the test, and a README paragraph: `single-turn` (add two numbers), `multi-turn`
(guess a number, with higher/lower feedback) and `tool` (look stock up with a tool).

Why a package: the templates are files (`templates/`, package data listed in
pyproject.toml), so that they read as the Python, TOML and Markdown they are; `files`
fills them. They are `string.Template`s, whose `$` substitution leaves the braces of the
Python and TOML they hold alone. Every kind has the rewards `correct_answer` (weight 1.0)
and `format_reward` (weight 0.2), so a solved example earns 1.2.
"""

from __future__ import annotations

from lmgym.scaffold.files import KINDS, NAME_PATTERN, check_name, module_name, render, write_package

__all__ = ["KINDS", "NAME_PATTERN", "check_name", "module_name", "render", "write_package"]
