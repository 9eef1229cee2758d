"""Chat models behind one contract.

`ChatModel` is the base class; `OpenAIChat` talks to any OpenAI-compatible server
(OpenAI, vLLM, llama.cpp, Ollama); `LocalModel` starts the embedded llama.cpp server;
`TransformersChat` runs a Hugging Face model in process; `LangChainChat` adapts a LangChain
chat model. `resolve_model` turns a spec (``"ollama:qwen2.5"``, ``"local"``, a model
object) into one of them. Heavy modules load on first use.

`Meter`, `Tally`, `current_meter`, `run_model` and `using_run_model` live in
`redline.context` and `Price` in `redline.types`; they are importable from here too.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from redline.context import Meter, Tally, current_meter, run_model, using_run_model
from redline.llm._base import ChatModel, Completion, Message
from redline.llm._resolve import resolve_model
from redline.types import Price

if TYPE_CHECKING:
    from redline.llm.langchain import LangChainChat
    from redline.llm.local import LocalModel
    from redline.llm.openai import OpenAIChat
    from redline.llm.transformers import TransformersChat

__all__ = [
    "ChatModel",
    "Completion",
    "LangChainChat",
    "LocalModel",
    "Message",
    "Meter",
    "OpenAIChat",
    "Price",
    "Tally",
    "TransformersChat",
    "current_meter",
    "resolve_model",
    "run_model",
    "using_run_model",
]

_LAZY = {
    "OpenAIChat": "redline.llm.openai",
    "LocalModel": "redline.llm.local",
    "TransformersChat": "redline.llm.transformers",
    "LangChainChat": "redline.llm.langchain",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'redline.llm' has no attribute {name!r}")
