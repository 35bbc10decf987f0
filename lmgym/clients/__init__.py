from lmgym.clients.base import ModelClient
from lmgym.clients.openai import OpenAIClient

__all__ = ["ModelClient", "OpenAIClient"]
