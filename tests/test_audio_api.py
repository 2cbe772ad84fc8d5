"""The OpenAI-compatible audio endpoints (/v1/audio/transcriptions, /v1/audio/speech,
/v1/models), driven by the official `openai` SDK.

The first tests run the server on the Python fake handlers (deterministic: a
scripted transcript with word-by-word partials, a sine tone per word); the
last ones run it on the bundled Whisper and Piper, and point the `openai` STT
and TTS backends of a second engine at it.
"""

from __future__ import annotations

import io
import json
import time
import wave
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from openai import APIStatusError, AuthenticationError, BadRequestError, OpenAI
from speech_checks import AUDIO, REFERENCES, read_wav, wer

from speech_to_speech import Engine, RealtimeServer, float32_to_pcm16
from speech_to_speech.handlers import create_handler
from speech_to_speech.handlers.tts.fake import word_frequency

KEY = "test-key"
SCRIPT = "the quick brown fox jumps"


def wav_bytes(samples: npt.NDArray[np.float32], rate: int, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(float32_to_pcm16(np.repeat(samples, channels)))
    return buf.getvalue()


def tone(seconds: float, rate: int, hz: float = 440.0) -> npt.NDArray[np.float32]:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def dominant_hz(samples: npt.NDArray[np.float32], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


@pytest.fixture(scope="module")
def fake_server() -> Iterator[RealtimeServer]:
    stt = create_handler("stt", "fake", script=[SCRIPT])
    llm = create_handler("llm", "fake")
    # 16 kHz tones: the endpoint converts them to OpenAI's 24 kHz.
    tts = create_handler("tts", "fake", sample_rate=16000, word_ms=200)
    engine = Engine(stt=stt, llm=llm, tts=tts)
    server = RealtimeServer(
        engine, port=0, api_key=KEY, backends={"stt": "fake-stt", "llm": "fake", "tts": "fake-tts"}
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(fake_server: RealtimeServer) -> OpenAI:
    return OpenAI(base_url=f"http://127.0.0.1:{fake_server.port}/v1", api_key=KEY, max_retries=0)


def test_models_lists_the_backends(client: OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["fake-stt", "fake", "fake-tts"]


def test_transcription_formats(client: OpenAI) -> None:
    upload = ("clip.wav", wav_bytes(tone(1.5, 44100), 44100, channels=2), "audio/wav")
    plain = client.audio.transcriptions.create(model="whisper-1", file=upload)
    assert plain.text == SCRIPT
    text = client.audio.transcriptions.create(
        model="whisper-1", file=upload, response_format="text"
    )
    assert text.strip() == SCRIPT
    verbose = client.audio.transcriptions.create(
        model="whisper-1", file=upload, response_format="verbose_json", language="de"
    )
    assert verbose.text == SCRIPT
    assert verbose.language == "de"  # the fake reports the language it was asked for
    assert verbose.duration == pytest.approx(1.5, abs=1e-3)


def test_transcription_streams_word_deltas(client: OpenAI) -> None:
    upload = ("clip.wav", wav_bytes(tone(1.0, 16000), 16000), "audio/wav")
    events = list(
        client.audio.transcriptions.create(model="gpt-4o-mini-transcribe", file=upload, stream=True)
    )
    types = [e.type for e in events]
    assert types == ["transcript.text.delta"] * len(SCRIPT.split()) + ["transcript.text.done"]
    deltas = "".join(e.delta for e in events[:-1])  # type: ignore[union-attr]
    assert deltas == SCRIPT
    assert events[-1].text == SCRIPT  # type: ignore[union-attr]


def test_transcription_refusals_are_openai_errors(
    client: OpenAI, fake_server: RealtimeServer
) -> None:
    with pytest.raises(BadRequestError) as bad:
        client.audio.transcriptions.create(
            model="whisper-1", file=("x.mp3", b"definitely not audio" * 50, "audio/mpeg")
        )
    assert bad.value.code == "invalid_file" and bad.value.param == "file"
    assert "could not decode" in bad.value.message
    upload = ("clip.wav", wav_bytes(tone(0.5, 16000), 16000), "audio/wav")
    with pytest.raises(BadRequestError) as bad:
        client.audio.transcriptions.create(model="whisper-1", file=upload, response_format="srt")
    assert bad.value.code == "unsupported_response_format"
    with pytest.raises(AuthenticationError):
        OpenAI(
            base_url=client.base_url, api_key="wrong", max_retries=0
        ).audio.transcriptions.create(model="whisper-1", file=upload)
    url = f"http://127.0.0.1:{fake_server.port}/v1/audio/transcriptions"
    auth = {"Authorization": f"Bearer {KEY}"}
    no_file = httpx.post(url, headers=auth, data={"model": "whisper-1"}, files={"x": b"1"})
    assert no_file.status_code == 400
    assert no_file.json()["error"]["param"] == "file"
    not_multipart = httpx.post(url, headers=auth, json={"file": "x"})
    assert not_multipart.status_code == 400
    assert not_multipart.json()["error"]["code"] == "invalid_multipart"
    huge = httpx.post(
        url, headers=auth, files={"file": ("big.wav", b"\0" * (26 * 1024 * 1024))}, timeout=60
    )
    assert huge.status_code == 413
    assert huge.json()["error"]["code"] == "file_too_large"
    # The server goes on serving after every refusal.
    assert client.audio.transcriptions.create(model="whisper-1", file=upload).text == SCRIPT


WORDS = "alpha bravo charlie"


def speak(client: OpenAI, response_format: Any, content_type: str) -> bytes:
    """The body of a speech request for WORDS, checked for its content type."""
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=WORDS, response_format=response_format
    ) as response:
        assert response.headers["content-type"] == content_type
        return response.read()


def test_speech_wav_is_the_tones_at_24k(client: OpenAI) -> None:
    body = speak(client, "wav", "audio/wav")
    assert body[:4] == b"RIFF" and body[8:16] == b"WAVEfmt "
    assert int.from_bytes(body[24:28], "little") == 24000
    pcm = np.frombuffer(body[44:], dtype="<i2").astype(np.float32) / 32768
    # Three 200 ms words at 24 kHz (the resampler's flush adds a few ms).
    assert abs(len(pcm) - 3 * 4800) < 400, len(pcm)
    for i, word in enumerate(WORDS.split()):
        middle = pcm[i * 4800 + 1000 : i * 4800 + 3800]
        assert dominant_hz(middle, 24000) == pytest.approx(word_frequency(word), abs=10)


def test_speech_opus_is_ogg_that_ffmpeg_decodes(client: OpenAI) -> None:
    """response_format "opus" is Ogg Opus, as OpenAI serves it: FFmpeg (PyAV) reads it back
    as the same tones, trimmed to the input's length by the last page's granule."""
    import av

    body = speak(client, "opus", "audio/ogg")
    assert body[:4] == b"OggS" and body[28:36] == b"OpusHead"
    with av.open(io.BytesIO(body)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "opus"
        frames = [f.to_ndarray() for f in container.decode(stream)]
        rate = stream.codec_context.sample_rate
    pcm = np.concatenate([f.reshape(-1) for f in frames]).astype(np.float32)
    assert rate == 48000
    # Exactly the PCM's samples (at 48 kHz): the encoder's delay and the last frame's
    # padding are trimmed by the pre-skip and the end's granule position.
    plain = speak(client, "pcm", "audio/pcm")
    assert len(pcm) == 2 * (len(plain) // 2), (len(pcm), len(plain) // 2)
    word = rate // 5  # 200 ms
    for i, w in enumerate(WORDS.split()):
        middle = pcm[i * word + word // 5 : (i + 1) * word - word // 5]
        assert dominant_hz(middle, rate) == pytest.approx(word_frequency(w), abs=15)


def test_speech_flac_is_lossless(client: OpenAI) -> None:
    """response_format "flac": FFmpeg (PyAV) decodes it to exactly the PCM response."""
    import av

    body = speak(client, "flac", "audio/flac")
    assert body[:4] == b"fLaC"
    with av.open(io.BytesIO(body)) as container:
        stream = container.streams.audio[0]
        assert (stream.codec_context.name, stream.codec_context.sample_rate) == ("flac", 24000)
        decoded = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(stream)])
    plain = np.frombuffer(speak(client, "pcm", "audio/pcm"), dtype="<i2")
    assert decoded.dtype == np.int16
    np.testing.assert_array_equal(decoded, plain)
    assert len(body) < plain.nbytes * 0.6, (len(body), plain.nbytes)


def test_speech_pcm_and_sse(client: OpenAI, fake_server: RealtimeServer) -> None:
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="one two", response_format="pcm", speed=2.0
    ) as response:
        assert response.headers["x-sample-rate"] == "24000"
        pcm = response.read()
    # speed 2: two 100 ms words.
    assert abs(len(pcm) // 2 - 2 * 2400) < 300, len(pcm)
    url = f"http://127.0.0.1:{fake_server.port}/v1/audio/speech"
    lines = []
    with httpx.stream(
        "POST",
        url,
        headers={"Authorization": f"Bearer {KEY}"},
        json={"model": "tts-1", "voice": "alloy", "input": "one two", "stream_format": "sse"},
    ) as sse:
        assert sse.headers["content-type"] == "text/event-stream"
        lines = [json.loads(x[6:]) for x in sse.iter_lines() if x.startswith("data: ")]
    assert lines[-1] == {"type": "speech.audio.done"}
    assert {e["type"] for e in lines[:-1]} == {"speech.audio.delta"}
    import base64

    audio = b"".join(base64.b64decode(e["audio"]) for e in lines[:-1])
    assert abs(len(audio) // 2 - 2 * 4800) < 400


def test_speech_refusals(client: OpenAI, fake_server: RealtimeServer) -> None:
    with pytest.raises(BadRequestError) as bad:
        client.audio.speech.create(model="tts-1", voice="alloy", input="hi", response_format="mp3")
    assert bad.value.code == "unsupported_response_format"
    with pytest.raises(BadRequestError) as bad:
        client.audio.speech.create(model="tts-1", voice="alloy", input="  ")
    assert bad.value.param == "input"
    with pytest.raises(BadRequestError) as bad:
        client.audio.speech.create(model="tts-1", voice="alloy", input="hi", speed=10)
    assert bad.value.param == "speed"
    url = f"http://127.0.0.1:{fake_server.port}/v1/audio/speech"
    broken = httpx.post(
        url, headers={"Authorization": f"Bearer {KEY}"}, content=b"{not json", timeout=10
    )
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_json"
    unauthorized = httpx.post(url, json={"input": "hi"}, timeout=10)
    assert unauthorized.status_code == 401


class FailingTTS:
    """Raises on every call: the endpoint must answer with an OpenAI error, not hang."""

    def synthesize(self, text: str, **kw: object) -> Iterator[object]:
        raise RuntimeError("the voice model is broken")


def test_a_failing_backend_is_a_server_error() -> None:
    engine = Engine(stt="scripted", llm="scripted", tts=FailingTTS())
    server = RealtimeServer(engine, port=0)
    server.start()
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="x", max_retries=0)
        with pytest.raises(APIStatusError) as failed:
            client.audio.speech.create(model="tts-1", voice="alloy", input="hello there")
        assert failed.value.status_code == 500
        assert "the voice model is broken" in failed.value.message
    finally:
        server.stop()


# --- the bundled models -------------------------------------------------------------------


@pytest.fixture(scope="module")
def whisper() -> Any:
    if not (AUDIO / "jfk.wav").exists():
        pytest.skip("shared test audio not found")
    stt = create_handler("stt", "faster-whisper", cpu_threads=2)
    stt.setup()
    return stt


@pytest.fixture(scope="module")
def real_server(whisper: Any) -> Iterator[RealtimeServer]:
    tts = create_handler("tts", "piper")
    tts.setup()
    engine = Engine(stt=whisper, llm=create_handler("llm", "fake"), tts=tts)
    server = RealtimeServer(
        engine, port=0, backends={"stt": "faster-whisper", "llm": "fake", "tts": "piper"}
    )
    server.start()
    yield server
    server.stop()


def test_real_models_through_the_sdk(real_server: RealtimeServer) -> None:
    client = OpenAI(base_url=f"http://127.0.0.1:{real_server.port}/v1", api_key="x")
    with (AUDIO / "jfk.wav").open("rb") as f:
        heard = client.audio.transcriptions.create(model="whisper-1", file=f)
    assert wer(REFERENCES["jfk.wav"], heard.text) < 0.2, heard.text
    started = time.perf_counter()
    # No "is" after a noun: Piper samples its prosody, and Whisper may hear
    # "the weather's", a right answer that a word error rate counts twice.
    line = "The weather was lovely today."
    spoken = client.audio.speech.create(
        model="tts-1", voice="alloy", input=line, response_format="wav"
    )
    print(f"\nspeech: {time.perf_counter() - started:.2f} s")
    back = client.audio.transcriptions.create(
        model="whisper-1", file=("speech.wav", spoken.content, "audio/wav")
    )
    assert wer(line, back.text) < 0.2, back.text


def test_one_server_serves_another(real_server: RealtimeServer, whisper: Any) -> None:
    """A second engine whose STT and TTS are this server's endpoints (`--stt openai
    --tts openai`): a spoken question goes in, the answer comes out as speech that
    the first server's Whisper understands."""
    base = f"http://127.0.0.1:{real_server.port}/v1"
    stt = create_handler("stt", "openai", base_url=base, api_key="x", model="whisper-1")
    tts = create_handler("tts", "openai", base_url=base, api_key="x", model="tts-1")
    answer = "Paris is the capital of France."
    llm = create_handler("llm", "fake", script=[answer])
    for h in (stt, tts, llm):
        h.setup()
    engine = Engine(stt=stt, llm=llm, tts=tts)
    session = engine.session(
        input_rate=16000, output_rate=24000, turn_detection=False, transcription=True
    )
    session.feed_audio(read_wav(AUDIO / "q_capital_france.wav"))
    session.commit()
    session.create_response()
    transcript, audio = "", []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        event = session.next_event(timeout=5)
        assert event is not None, "no event"
        if event["type"] == "input_transcript_completed":
            transcript = event["transcript"]
        elif event["type"] == "audio_delta":
            audio.append(event["audio"])
        elif event["type"] == "response_done":
            break
    # Whisper tiny.en hears this clip as "What is the capital and friends?": the remote
    # transcript must be exactly what the same model gives in process.
    question = read_wav(AUDIO / "q_capital_france.wav")
    direct = " ".join(t.text for t in whisper.transcribe(question) if t.final).strip()
    assert transcript == direct, (transcript, direct)
    assert wer(REFERENCES["q_capital_france.wav"], transcript) <= 0.5, transcript
    speech = np.concatenate(audio).astype(np.float32)
    assert len(speech) > 24000 * 0.8
    back = OpenAI(base_url=base, api_key="x").audio.transcriptions.create(
        model="whisper-1", file=("answer.wav", wav_bytes(speech, 24000), "audio/wav")
    )
    # Piper's voice varies from run to run ("Paris is" is heard as "Parishes" at times):
    # the words that matter must come back.
    assert "capital of france" in back.text.lower(), back.text
