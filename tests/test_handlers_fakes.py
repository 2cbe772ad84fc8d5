"""The fake handlers: deterministic outputs, cancellation, tone-per-word timing."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from speech_to_speech.handlers import (
    AudioChunk,
    TextDelta,
    ToolCall,
    Transcript,
    Usage,
    build_chat_messages,
    create_handler,
)
from speech_to_speech.handlers.llm._tool_text import ToolCallSplitter
from speech_to_speech.handlers.tts.fake import word_frequency

SILENCE = np.zeros(16_000, dtype=np.float32)
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}


class CancelAfter:
    """A cancellation flag that turns on after ``n`` checks."""

    def __init__(self, n: int) -> None:
        self.n = n

    def is_set(self) -> bool:
        self.n -= 1
        return self.n < 0


def test_fake_stt_partials_word_by_word_then_final() -> None:
    stt = create_handler("stt", "fake", script=["hello big world", "second one"])
    stt.setup()
    first = list(stt.transcribe(SILENCE))
    assert first == [
        Transcript("hello", False, "en"),
        Transcript("hello big", False, "en"),
        Transcript("hello big world", False, "en"),
        Transcript("hello big world", True, "en"),
    ]
    second = list(stt.transcribe(SILENCE, language="fr"))
    assert [t.text for t in second if t.final] == ["second one"]
    assert second[-1].language == "fr"
    # The script cycles.
    assert list(stt.transcribe(SILENCE))[-1].text == "hello big world"


def test_fake_stt_cancel_stops_without_final() -> None:
    stt = create_handler("stt", "fake", script=["one two three four"])
    out = list(stt.transcribe(SILENCE, cancel=CancelAfter(2)))
    assert [t.text for t in out] == ["one", "one two"]
    assert not any(t.final for t in out)
    event = threading.Event()
    event.set()
    assert list(stt.transcribe(SILENCE, cancel=event)) == []


def test_fake_llm_streams_words_and_usage() -> None:
    llm = create_handler("llm", "fake", script=["Hello there, friend."])
    events = list(llm.generate([{"role": "user", "content": "hi you"}]))
    assert events == [
        TextDelta("Hello"),
        TextDelta(" there,"),
        TextDelta(" friend."),
        Usage(input_tokens=2, output_tokens=3),
    ]


def test_fake_llm_echo_and_max_tokens() -> None:
    llm = create_handler("llm", "fake")
    events = list(llm.generate([{"role": "user", "content": "what time is it"}], max_tokens=3))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "You said: what"
    assert events[-1] == Usage(4, 3)


def test_fake_llm_tool_call_then_answer_from_tool_output() -> None:
    llm = create_handler("llm", "fake")
    messages: list[dict[str, Any]] = [{"role": "user", "content": "What's the weather in Paris?"}]
    events = list(llm.generate(messages, tools=[WEATHER_TOOL], tool_choice="auto"))
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"location": "Paris"}
    assert not any(isinstance(e, TextDelta) for e in events)
    # Same input, same call id.
    again = [e for e in llm.generate(messages, tools=[WEATHER_TOOL]) if isinstance(e, ToolCall)]
    assert again == calls

    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": calls[0].call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": calls[0].arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": calls[0].call_id, "content": "sunny, 21 C"},
    ]
    answer = list(llm.generate(messages, tools=[WEATHER_TOOL]))
    assert "".join(e.text for e in answer if isinstance(e, TextDelta)) == (
        "The result is sunny, 21 C."
    )


def test_fake_llm_tool_choice_rules() -> None:
    llm = create_handler("llm", "fake")
    chat_style = {
        "type": "function",
        "function": {k: v for k, v in WEATHER_TOOL.items() if k != "type"},
    }
    msgs = [{"role": "user", "content": "tell me a joke"}]
    # No keyword: plain text, unless a call is forced or required.
    assert not any(isinstance(e, ToolCall) for e in llm.generate(msgs, tools=[WEATHER_TOOL]))
    forced = list(
        llm.generate(
            msgs, tools=[chat_style], tool_choice={"type": "function", "name": "get_weather"}
        )
    )
    assert isinstance(forced[0], ToolCall)
    assert isinstance(
        next(iter(llm.generate(msgs, tools=[WEATHER_TOOL], tool_choice="required"))), ToolCall
    )
    weather = [{"role": "user", "content": "weather in Oslo"}]
    assert not any(
        isinstance(e, ToolCall)
        for e in llm.generate(weather, tools=[WEATHER_TOOL], tool_choice="none")
    )


def test_fake_llm_cancel_and_latency() -> None:
    llm = create_handler("llm", "fake", script=["a b c d e f"], latency_ms=20)
    t0 = time.perf_counter()
    events = list(llm.generate([{"role": "user", "content": "x"}], cancel=CancelAfter(2)))
    assert events == [TextDelta("a"), TextDelta(" b")]
    assert 0.05 <= time.perf_counter() - t0 < 1.0


def test_fake_tts_tone_per_word() -> None:
    tts = create_handler("tts", "fake")
    tts.setup()
    chunks = list(tts.synthesize("Hello big world"))
    assert len(chunks) == 3
    assert all(isinstance(c, AudioChunk) and c.sample_rate == 24_000 for c in chunks)
    assert all(len(c.samples) == 2400 and c.samples.dtype == np.float32 for c in chunks)
    assert [c.words for c in chunks] == [
        [("Hello", 0.0, 0.1)],
        [("big", 0.0, 0.1)],
        [("world", 0.0, 0.1)],
    ]
    # The dominant frequency of each chunk is the word's frequency (10 Hz bins at 100 ms).
    for chunk, word in zip(chunks, ["Hello", "big", "world"], strict=True):
        spectrum = np.abs(np.fft.rfft(chunk.samples))
        peak = np.argmax(spectrum) * chunk.sample_rate / len(chunk.samples)
        assert abs(peak - word_frequency(word)) <= 10
    # Deterministic, and speed shortens each word.
    again = list(tts.synthesize("Hello big world"))
    assert all(np.array_equal(a.samples, b.samples) for a, b in zip(chunks, again, strict=True))
    fast = list(tts.synthesize("Hello", speed=2.0))
    assert len(fast[0].samples) == 1200 and fast[0].duration == pytest.approx(0.05)


def test_fake_tts_cancel() -> None:
    tts = create_handler("tts", "fake")
    assert len(list(tts.synthesize("one two three four", cancel=CancelAfter(1)))) == 1


class _CountingCancel:
    """A cancel token that counts how often it is looked at (once per chunk made)."""

    def __init__(self) -> None:
        self.looks = 0

    def is_set(self) -> bool:
        self.looks += 1
        return False


def test_handlers_are_lazy_generators() -> None:
    tts = create_handler("tts", "fake")
    cancel = _CountingCancel()
    gen: Iterator[AudioChunk] = tts.synthesize("a b c d e f g h", cancel=cancel)
    assert cancel.looks == 0  # nothing is made before the first chunk is asked for
    next(gen)
    assert cancel.looks == 1  # the first chunk only, not the whole sentence
    gen.close()


def test_build_chat_messages_keeps_whole_turns() -> None:
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "u2"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]},
        {"role": "tool", "tool_call_id": "c1", "content": "r"},
        {"role": "assistant", "content": "a2"},
        {"role": "user", "content": "u3"},
    ]
    msgs = build_chat_messages(history, system_prompt="be brief", chat_size=2)
    assert [m.get("content") for m in msgs] == ["be brief", "u2", None, "r", "a2", "u3"]
    assert msgs[0]["role"] == "system"
    assert len(build_chat_messages(history, chat_size=None)) == len(history)
    assert len(build_chat_messages(history, chat_size=10)) == len(history)
    msgs[1]["content"] = "changed"
    assert history[2]["content"] == "u2"


def test_tool_call_splitter_streams_text_around_calls() -> None:
    splitter = ToolCallSplitter()
    pieces = [
        "Sure",
        ". <tool",
        '_call>{"name": "get_weather", "argu',
        'ments": {"location": "Oslo"}}',
        "</tool_call>",
        " done <",
    ]
    shown = "".join(splitter.feed(p) for p in pieces)
    rest, calls = splitter.finish()
    assert shown + rest == "Sure.  done <"
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"location": "Oslo"})
    ]
