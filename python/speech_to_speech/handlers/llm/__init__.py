"""Language-model backends; importing this package registers them all."""

from speech_to_speech.handlers.llm import (
    chat_completions,
    fake,
    llama_cpp,
    mlx_lm,
    responses_api,
    transformers_llm,
)

__all__ = [
    "chat_completions",
    "fake",
    "llama_cpp",
    "mlx_lm",
    "responses_api",
    "transformers_llm",
]
