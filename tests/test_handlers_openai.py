"""The OpenAI-SDK backends against local servers: llama.cpp's and small scripted SSE servers."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseCreatedEvent,
    ResponseError,
    ResponseFailedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseFunctionToolCall,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseTextDeltaEvent,
    ResponseUsage,
)
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails
from speech_checks import free_port, serve

from speech_to_speech.handlers import (
    LLMAuthError,
    LLMConnectionError,
    LLMResponseError,
    TextDelta,
    ToolCall,
    Usage,
    create_handler,
)
from speech_to_speech.handlers.llm.chat_completions import ChatCompletionsLLM
from speech_to_speech.handlers.llm.responses_api import messages_to_input
from speech_to_speech.models import smollm2_gguf

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


# --- a scripted HTTP server ---------------------------------------------------------------

Reply = tuple[int, list[str] | dict[str, Any]]
"""(status, SSE data lines) for a stream, or (status, JSON body)."""


class ScriptedServer:
    """A stdlib HTTP server answering each POST with ``script(path, body)``; records requests."""

    def __init__(self, script: Callable[[str, dict[str, Any]], Reply]) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, body))
                status, payload = script(self.path, body)
                if isinstance(payload, list):
                    self.send_response(status)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    for data in payload:
                        event = json.loads(data).get("type") if data != "[DONE]" else None
                        head = f"event: {event}\n" if event else ""
                        self.wfile.write(f"{head}data: {data}\n\n".encode())
                        self.wfile.flush()
                else:
                    raw = json.dumps(payload).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --- chat-completions against llama.cpp's OpenAI-compatible server ------------------------


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(smollm2_gguf()),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        # One prompt thread as well: llama.cpp's spinning threads stall on a busy CI box.
        "--n_threads",
        "1",
        "--n_threads_batch",
        "1",
    ]
    base_url = f"http://127.0.0.1:{port}/v1"
    with serve(command, base_url + "/models", log_path):
        yield base_url


def test_chat_completions_streams_from_llama_server(llama_server: str) -> None:
    llm = create_handler(
        "llm",
        "chat-completions",
        base_url=llama_server,
        api_key="anything",
        temperature=0.0,
        max_tokens=24,
    )
    llm.setup()
    assert isinstance(llm, ChatCompletionsLLM) and llm.model  # taken from /v1/models
    t0 = time.perf_counter()
    first: float | None = None
    events = []
    for event in llm.generate([{"role": "user", "content": "Say hello in one sentence."}]):
        if first is None and isinstance(event, TextDelta):
            first = time.perf_counter() - t0
        events.append(event)
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 1, "the reply should stream in several deltas"
    assert "".join(d.text for d in deltas).strip()
    usage = [e for e in events if isinstance(e, Usage)]
    if usage:  # llama.cpp's server sends usage when asked with stream_options
        assert usage[-1].output_tokens > 0
    print(f"\nchat-completions via llama_cpp.server: first delta {first:.3f} s")


def test_chat_completions_cancel_stops_stream(llama_server: str) -> None:
    llm = create_handler("llm", "chat-completions", base_url=llama_server, max_tokens=64)
    event = threading.Event()
    out = []
    for e in llm.generate([{"role": "user", "content": "Count from one to fifty."}], cancel=event):
        out.append(e)
        event.set()
    assert len(out) == 1


def test_chat_completions_unreachable_endpoint() -> None:
    llm = create_handler(
        "llm",
        "chat-completions",
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        model="m",
        timeout=5.0,
    )
    with pytest.raises(LLMConnectionError, match="cannot connect"):
        list(llm.generate([{"role": "user", "content": "hi"}]))


def test_chat_completions_bad_key() -> None:
    error = {
        "error": {
            "message": "Incorrect API key provided",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
    }
    with ScriptedServer(lambda path, body: (401, error)) as server:
        llm = create_handler(
            "llm", "chat-completions", base_url=server.base_url, api_key="bad", model="m"
        )
        with pytest.raises(LLMAuthError, match="401"):
            list(llm.generate([{"role": "user", "content": "hi"}]))


def _chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> str:
    return ChatCompletionChunk.model_validate(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
            if delta or finish
            else [],
            "usage": usage,
        }
    ).model_dump_json()


def test_chat_completions_a_cut_stream_is_an_error_not_an_answer() -> None:
    # Two deltas, then the connection closes: no finish_reason, no [DONE].
    cut = [_chunk({"role": "assistant", "content": "Paris is"}), _chunk({"content": " the"})]
    whole = [*cut, _chunk({}, "stop"), "[DONE]"]
    with ScriptedServer(lambda path, body: (200, cut if "cut" in str(body) else whole)) as server:
        llm = create_handler("llm", "chat-completions", base_url=server.base_url, model="m")
        got: list[Any] = []
        with pytest.raises(LLMResponseError, match="finish_reason"):
            got.extend(llm.generate([{"role": "user", "content": "cut"}]))
        assert got == [TextDelta("Paris is"), TextDelta(" the")]
        # The same handler answers the next request.
        assert list(llm.generate([{"role": "user", "content": "hi"}])) == got


def test_chat_completions_accumulates_streamed_tool_calls() -> None:
    fragments = [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ],
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"loca'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": 'tion": "Paris"}'}}]},
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location": "Rome"}'},
                }
            ]
        },
    ]
    stream = [_chunk(f) for f in fragments] + [
        _chunk({}, "tool_calls"),
        _chunk({}, usage={"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16}),
        "[DONE]",
    ]
    with ScriptedServer(lambda path, body: (200, stream)) as server:
        llm = create_handler("llm", "chat-completions", base_url=server.base_url, model="m")
        events = list(
            llm.generate(
                [{"role": "user", "content": "weather in Paris and Rome?"}],
                tools=[WEATHER_TOOL],
                tool_choice={"type": "function", "name": "get_weather"},
            )
        )
        sent = server.requests[0][1]
    assert events == [
        ToolCall("call_a", "get_weather", '{"location": "Paris"}'),
        ToolCall("call_b", "get_weather", '{"location": "Rome"}'),
        Usage(7, 9),
    ]
    # Realtime-style tools and tool_choice go out in the Chat Completions shape.
    assert sent["tools"][0] == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": WEATHER_TOOL["parameters"],
        },
    }
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


# --- responses-api against a scripted Responses SSE server --------------------------------


def _response(status: str, output: list[Any], **extra: Any) -> Response:
    return Response(
        id="resp_1",
        created_at=0,
        model="m",
        object="response",
        output=output,
        parallel_tool_calls=True,
        tool_choice="auto",
        tools=[],
        status=status,
        **extra,
    )


def _usage(i: int, o: int) -> ResponseUsage:
    return ResponseUsage(
        input_tokens=i,
        output_tokens=o,
        total_tokens=i + o,
        input_tokens_details=InputTokensDetails(cached_tokens=0, cache_write_tokens=0),
        output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
    )


def responses_script(path: str, body: dict[str, Any]) -> Reply:
    """Text for a plain question, a function call when tools are offered, failure on "fail"."""
    assert path == "/v1/responses"
    user = [i for i in body["input"] if i.get("role") == "user"][-1]["content"]
    seq = iter(range(100))
    events: list[Any] = [
        ResponseCreatedEvent(
            type="response.created",
            sequence_number=next(seq),
            response=_response("in_progress", []),
        )
    ]
    if "fail" in user:
        events.append(
            ResponseFailedEvent(
                type="response.failed",
                sequence_number=next(seq),
                response=_response(
                    "failed",
                    [],
                    error=ResponseError(code="server_error", message="The model crashed"),
                ),
            )
        )
    elif body.get("tools"):
        call = ResponseFunctionToolCall(
            type="function_call",
            id="fc_1",
            call_id="call_1",
            name="get_weather",
            arguments="",
            status="in_progress",
        )
        done = call.model_copy(update={"arguments": '{"location": "Paris"}', "status": "completed"})
        events += [
            ResponseOutputItemAddedEvent(
                type="response.output_item.added",
                output_index=0,
                sequence_number=next(seq),
                item=call,
            ),
            ResponseFunctionCallArgumentsDeltaEvent(
                type="response.function_call_arguments.delta",
                item_id="fc_1",
                output_index=0,
                sequence_number=next(seq),
                delta='{"location": ',
            ),
            ResponseFunctionCallArgumentsDeltaEvent(
                type="response.function_call_arguments.delta",
                item_id="fc_1",
                output_index=0,
                sequence_number=next(seq),
                delta='"Paris"}',
            ),
            ResponseFunctionCallArgumentsDoneEvent(
                type="response.function_call_arguments.done",
                item_id="fc_1",
                output_index=0,
                sequence_number=next(seq),
                arguments='{"location": "Paris"}',
            ),
            ResponseOutputItemDoneEvent(
                type="response.output_item.done",
                output_index=0,
                sequence_number=next(seq),
                item=done,
            ),
            ResponseCompletedEvent(
                type="response.completed",
                sequence_number=next(seq),
                response=_response("completed", [done], usage=_usage(20, 8)),
            ),
        ]
    else:
        words = ["Paris", " is", " the", " capital."]
        message = ResponseOutputMessage(
            type="message",
            id="msg_1",
            role="assistant",
            status="completed",
            content=[ResponseOutputText(type="output_text", text="".join(words), annotations=[])],
        )
        events += [_text_delta(next(seq), w) for w in words]
        events.append(
            ResponseCompletedEvent(
                type="response.completed",
                sequence_number=next(seq),
                response=_response("completed", [message], usage=_usage(12, 4)),
            )
        )
    return 200, [e.model_dump_json() for e in events]


def _text_delta(seq: int, text: str) -> ResponseTextDeltaEvent:
    return ResponseTextDeltaEvent(
        type="response.output_text.delta",
        item_id="msg_1",
        output_index=0,
        content_index=0,
        logprobs=[],
        sequence_number=seq,
        delta=text,
    )


@pytest.fixture
def responses_server() -> Iterator[ScriptedServer]:
    with ScriptedServer(responses_script) as server:
        yield server


def test_responses_streams_text_and_usage(responses_server: ScriptedServer) -> None:
    llm = create_handler("llm", "responses-api", base_url=responses_server.base_url, model="m")
    events = list(
        llm.generate(
            [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is the capital of France?"},
            ],
            max_tokens=50,
            temperature=0.2,
        )
    )
    assert events == [
        TextDelta("Paris"),
        TextDelta(" is"),
        TextDelta(" the"),
        TextDelta(" capital."),
        Usage(12, 4),
    ]
    sent = responses_server.requests[0][1]
    assert sent["stream"] is True and sent["store"] is False
    assert sent["max_output_tokens"] == 50 and sent["temperature"] == 0.2
    assert sent["input"][0] == {"type": "message", "role": "system", "content": "Be brief."}


def test_responses_function_call(responses_server: ScriptedServer) -> None:
    llm = create_handler("llm", "responses-api", base_url=responses_server.base_url, model="m")
    events = list(
        llm.generate(
            [{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER_TOOL],
            tool_choice="auto",
        )
    )
    assert events == [ToolCall("call_1", "get_weather", '{"location": "Paris"}'), Usage(20, 8)]
    sent = responses_server.requests[0][1]
    assert sent["tools"][0]["name"] == "get_weather" and sent["tools"][0]["strict"] is False
    assert sent["tool_choice"] == "auto"


def test_responses_failed_raises(responses_server: ScriptedServer) -> None:
    llm = create_handler("llm", "responses-api", base_url=responses_server.base_url, model="m")
    with pytest.raises(LLMResponseError, match="The model crashed"):
        list(llm.generate([{"role": "user", "content": "please fail"}]))


def test_responses_a_cut_stream_is_an_error_not_an_answer() -> None:
    deltas = [_text_delta(i, w).model_dump_json() for i, w in enumerate(["Paris", " is"])]
    with ScriptedServer(lambda path, body: (200, deltas)) as server:
        llm = create_handler("llm", "responses-api", base_url=server.base_url, model="m")
        got: list[Any] = []
        with pytest.raises(LLMResponseError, match=r"response\.completed"):
            got.extend(llm.generate([{"role": "user", "content": "hi"}]))
    assert got == [TextDelta("Paris"), TextDelta(" is")]


def test_responses_errors_for_bad_key_and_unreachable() -> None:
    error = {"error": {"message": "bad key", "type": "invalid_request_error", "code": None}}
    with ScriptedServer(lambda path, body: (401, error)) as server:
        llm = create_handler("llm", "responses-api", base_url=server.base_url, api_key="x")
        with pytest.raises(LLMAuthError):
            list(llm.generate([{"role": "user", "content": "hi"}]))
    llm = create_handler("llm", "responses-api", base_url=f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(LLMConnectionError):
        list(llm.generate([{"role": "user", "content": "hi"}]))


def test_messages_to_responses_input_items() -> None:
    items = messages_to_input(
        [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_9",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_9", "content": "rain"},
            {"role": "assistant", "content": "It rains."},
        ]
    )
    assert items == [
        {"type": "message", "role": "system", "content": "sys"},
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "weather?"}],
        },
        {
            "type": "function_call",
            "call_id": "call_9",
            "name": "get_weather",
            "arguments": '{"location": "Oslo"}',
        },
        {"type": "function_call_output", "call_id": "call_9", "output": "rain"},
        {"type": "message", "role": "assistant", "content": "It rains."},
    ]
