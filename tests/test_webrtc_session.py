"""WebRTC calls as Realtime sessions, ephemeral keys, the page and TLS, on the scripted backends.

The client is aiortc (a WebRTC stack written by others, ``benches/_webrtc_client.py``);
the models are the core's scripted ones (a tone per word, "You said: ..."), the
VAD is the real Silero. Every event on ``oai-events`` is validated with the
official SDK's types, extra fields forbidden, as strict clients do.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
import sys
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from aiortc import RTCPeerConnection
from openai import AsyncOpenAI
from openai.types.realtime import ClientSecretCreateResponse
from test_realtime import SlowLlm
from test_realtime_conformance import strict
from test_webrtc import _strip_opus

from speech_to_speech import Engine, RealtimeServer, ServerConfigError, resample
from speech_to_speech.vad import load_silero_vad

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benches"))
from _webrtc_client import (
    RATE,
    Call,
    CallRefused,
    Microphone,
    offer_sdp,
    open_call,
    post_offer,
)

websockets = pytest.importorskip("websockets")

AUDIO_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "audio"

pytestmark = pytest.mark.asyncio(loop_scope="module")


def speech(name: str = "q_capital_france.wav") -> np.ndarray:
    path = AUDIO_DIR / name
    if not path.exists():
        pytest.skip("shared test audio not found")
    with wave.open(str(path), "rb") as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    audio = pcm.astype(np.float32) / 32768.0
    return np.asarray(resample(audio, input_rate=16000, output_rate=RATE), dtype=np.float32)


def checked(call: Call) -> list[dict[str, Any]]:
    """Every event of the call so far, each validated strictly (GA types)."""
    out = []
    for _, ev in call.events:
        if ev["type"] != "speech_to_speech.turn.timings":  # an extension, asked for
            strict(ev, beta=False)
        out.append(ev)
    return out


def serve(engine: Engine, **kw: Any) -> Iterator[RealtimeServer]:
    server = RealtimeServer(engine, port=0, webrtc_port=0, **kw)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def vad() -> Any:
    return load_silero_vad()


@pytest.fixture(scope="module")
def server(vad: Any) -> Iterator[RealtimeServer]:
    engine = Engine(stt="scripted", llm="scripted", tts="scripted", vad=vad, max_sessions=8)
    yield from serve(engine)


@pytest.fixture(scope="module")
def slow_server(vad: Any) -> Iterator[RealtimeServer]:
    engine = Engine(stt="scripted", llm=SlowLlm(), tts="scripted", vad=vad)
    yield from serve(engine)


TRANSCRIBE = {"type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}}


async def _say_and_wait(call: Call, mic: Microphone, kind: str = "response.done") -> None:
    mic.say(speech())
    await call.next_event(kind, timeout=30)


async def test_a_spoken_turn_rides_the_track_and_the_events_ride_oai_events(
    server: RealtimeServer,
) -> None:
    mic = Microphone()
    async with open_call(server.http_url, mic, session=TRANSCRIBE) as call:
        created = await call.next_event()
        assert created["type"] == "session.created"
        assert created["session"]["audio"]["input"]["transcription"]["model"] == "whisper-1"
        await _say_and_wait(call, mic)
        done_at = time.perf_counter()
        stopped = await call.next_event("output_audio_buffer.stopped", timeout=15)
        events = checked(call)
    types = [e["type"] for e in events]
    for kind in (
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_audio_transcript.delta",
        "response.output_audio.done",
    ):
        assert kind in types, (kind, types)
    # Over WebRTC the audio rides the track, never the data channel.
    assert "response.output_audio.delta" not in types
    # OpenAI's order: started after the audio part was added; stopped after response.done.
    assert types.index("response.content_part.added") < types.index("output_audio_buffer.started")
    assert types.index("response.done") < types.index("output_audio_buffer.stopped")
    done = next(e for e in events if e["type"] == "response.done")
    assert done["response"]["status"] == "completed"
    rid = done["response"]["id"]
    started = next(e for e in events if e["type"] == "output_audio_buffer.started")
    assert started["response_id"] == rid and stopped["response_id"] == rid
    # The scripted TTS speaks a 100 ms tone a word: all of it came down the track.
    words = done["response"]["output"][0]["content"][0]["transcript"].split()
    got = call.received()
    assert abs(len(got) / RATE - 0.1 * len(words)) < 0.15, (len(got) / RATE, words)
    assert np.sqrt(np.mean(got**2)) > 0.1
    # And nothing came after the stop.
    assert call.first_rtp_after(done_at + 0.5 + 0.1 * len(words)) is None


async def test_barge_in_clears_the_track_and_cancels_the_response(
    slow_server: RealtimeServer,
) -> None:
    mic = Microphone()
    async with open_call(slow_server.http_url, mic) as call:
        mic.say(speech())
        started = await call.next_event("output_audio_buffer.started", timeout=30)
        await asyncio.sleep(0.6)  # the answer plays for a while
        mic.say(speech("interrupt_wait.wav"))
        cleared = await call.next_event("output_audio_buffer.cleared", timeout=15)
        cleared_at = time.perf_counter()
        truncated = await call.next_event("conversation.item.truncated", timeout=5)
        # The track went quiet at once (frames already in flight aside).
        await asyncio.sleep(0.6)
        late = [t for t in call.rtp_times if t > cleared_at + 0.1]
        events = checked(call)
    assert cleared["response_id"] == started["response_id"]
    done = next(e for e in events if e["type"] == "response.done")
    assert done["response"]["id"] == started["response_id"]
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "turn_detected"
    # The item was cut to what went out: about what the client received.
    heard_ms = sum(len(a) for t, a in call.audio if t < cleared_at) * 1000 / RATE
    assert abs(truncated["audio_end_ms"] - heard_ms) < 250, (truncated, heard_ms)
    assert truncated["item_id"] == done["response"]["output"][0]["id"]
    assert len(late) <= 3, f"{len(late)} packets after the clear"


async def test_output_audio_buffer_clear_stops_the_answer(slow_server: RealtimeServer) -> None:
    mic = Microphone()
    async with open_call(slow_server.http_url, mic) as call:
        mic.say(speech())
        started = await call.next_event("output_audio_buffer.started", timeout=30)
        await asyncio.sleep(0.3)
        call.send({"type": "output_audio_buffer.clear", "event_id": "evt_clear"})
        cleared = await call.next_event("output_audio_buffer.cleared", timeout=5)
        done = await call.next_event("response.done", timeout=5)
        truncated = next(e for e in checked(call) if e["type"] == "conversation.item.truncated")
    assert cleared["response_id"] == started["response_id"] == done["response"]["id"]
    # Cutting the item being spoken ends its response.
    assert done["response"]["status"] == "cancelled"
    assert 0 < truncated["audio_end_ms"] < 1500


async def test_bad_input_gets_clear_answers_and_other_calls_go_on(
    server: RealtimeServer,
) -> None:
    url = server.http_url
    async with open_call(url, Microphone()) as survivor:
        await survivor.next_event("session.created")
        # Not JSON, binary, and the WebSocket-only append: errors, the call goes on.
        survivor.send({"type": "input_audio_buffer.append", "audio": "AAAA", "event_id": "e1"})
        err = await survivor.next_event("error")
        assert err["error"]["code"] == "unsupported_event" and err["error"]["event_id"] == "e1"
        survivor.channel.send("this is not json")
        err = await survivor.next_event("error")
        assert err["error"]["code"] == "invalid_json"
        survivor.channel.send(b"\xff\xfe")
        err = await survivor.next_event("error")
        assert err["error"]["code"] == "invalid_json"
        for body, kind, status, code in [
            ("hello", "application/sdp", 400, "invalid_sdp"),
            ("{}", "application/json", 415, "unsupported_media_type"),
        ]:
            async with httpx.AsyncClient() as http:
                r = await http.post(
                    f"{url}/v1/realtime/calls", content=body, headers={"Content-Type": kind}
                )
            assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
        # A form whose session the server cannot apply is refused before any call.
        no_audio = Call(pc=RTCPeerConnection())
        no_audio.pc.createDataChannel("oai-events")
        sdp = await offer_sdp(no_audio)
        r = await post_offer(url, sdp)
        assert (r.status_code, r.json()["error"]["code"]) == (400, "no_audio")
        mic_sdp = await _audio_offer()
        # Audio without a codec the server speaks (no Opus): refused, saying so.
        r = await post_offer(url, _strip_opus(mic_sdp))
        assert (r.status_code, r.json()["error"]["code"]) == (400, "unsupported_codec"), r.text
        bad = {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "magic"}}}}
        r = await post_offer(url, mic_sdp, session=bad)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "session.audio.input.turn_detection.type"
        await no_audio.pc.close()
        survivor.send({"type": "response.create", "response": {"instructions": "still there?"}})
        done = await survivor.next_event("response.done", timeout=10)
        assert done["response"]["status"] == "completed"
        checked(survivor)
    assert await _calls_drop(server)


async def _audio_offer() -> str:
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendrecv")
    pc.createDataChannel("oai-events")
    try:
        return await offer_sdp(Call(pc=pc))
    finally:
        await pc.close()


async def _calls_drop(server: RealtimeServer) -> bool:
    for _ in range(100):
        if server.calls == 0:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_calls_count_against_max_sessions(vad: Any) -> None:
    engine = Engine(stt="scripted", llm="scripted", tts="scripted", vad=vad, max_sessions=1)
    for server in serve(engine):
        # A WebSocket session holds the only slot: a call is refused with 429.
        async with websockets.connect(server.url) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            with pytest.raises(CallRefused) as refused:
                async with open_call(server.http_url, Microphone()):
                    pass
            assert refused.value.status == 429
            assert refused.value.error["code"] == "session_limit_reached"
        # Once it is gone a call gets the slot, and then a second call is refused.
        for _ in range(100):
            if engine.sessions == 0:
                break
            await asyncio.sleep(0.05)
        async with open_call(server.http_url, Microphone()) as first:
            await first.next_event("session.created")
            with pytest.raises(CallRefused) as refused:
                async with open_call(server.http_url, Microphone()):
                    pass
            assert refused.value.status == 429
            first.send({"type": "response.create"})
            assert (await first.next_event("response.done"))["response"]["status"] == "completed"


async def test_turn_timings_count_the_first_frame_on_the_wire(server: RealtimeServer) -> None:
    mic = Microphone()
    async with open_call(server.http_url, mic, query="?timings=1") as call:
        await _say_and_wait(call, mic, "speech_to_speech.turn.timings")
        timings = next(e for _, e in call.events if e["type"].endswith("turn.timings"))
    t = timings["timings"]
    # Speculation may synthesise before the commit; nothing goes out before it.
    assert t["tts_first_chunk_ms"] <= t["first_audio_out_ms"]
    assert t["commit_ms"] <= t["first_audio_out_ms"]


# --- ephemeral keys -----------------------------------------------------------------------

KEY = "sk-server-test"


@pytest.fixture(scope="module")
def auth_server(vad: Any) -> Iterator[RealtimeServer]:
    engine = Engine(stt="scripted", llm="scripted", tts="scripted", vad=vad)
    yield from serve(engine, api_key=KEY)


def _sdk(server: RealtimeServer, key: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{server.http_url}/v1", api_key=key, max_retries=0)


async def _mint(server: RealtimeServer, body: dict[str, Any], key: str | None = KEY) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient() as http:
        return await http.post(
            f"{server.http_url}/v1/realtime/client_secrets", json=body, headers=headers
        )


async def test_ephemeral_keys_are_minted_with_the_servers_key(
    auth_server: RealtimeServer,
) -> None:
    session = {
        "type": "realtime",
        "instructions": "Answer like a pirate.",
        "audio": {"output": {"voice": "marin"}},
    }
    minted = await _sdk(auth_server, KEY).realtime.client_secrets.create(
        expires_after={"anchor": "created_at", "seconds": 120}, session=session
    )
    assert isinstance(minted, ClientSecretCreateResponse)
    assert minted.value.startswith("ek_")
    assert abs(minted.expires_at - (time.time() + 120)) < 5
    assert minted.session.type == "realtime"
    assert minted.session.instructions == "Answer like a pirate."
    raw = (await _mint(auth_server, {"session": session})).json()
    # Strictly OpenAI's shape: no field the SDK's type lacks.
    checked_model = ClientSecretCreateResponse.model_validate(raw)
    assert not checked_model.model_extra and not checked_model.session.model_extra
    assert abs(raw["expires_at"] - (time.time() + 600)) < 5  # OpenAI's default life
    # Only the server's key mints.
    for key, code in [(None, "invalid_api_key"), ("wrong", "invalid_api_key")]:
        r = await _mint(auth_server, {}, key=key)
        assert (r.status_code, r.json()["error"]["code"]) == (401, code)
    r = await _mint(auth_server, {}, key=minted.value)
    assert r.status_code == 401 and "cannot mint" in r.json()["error"]["message"]
    # Bad requests name what is wrong.
    for body, param in [
        ({"expires_after": {"seconds": 5}}, "expires_after.seconds"),
        ({"expires_after": {"anchor": "now", "seconds": 60}}, "expires_after.anchor"),
        ({"session": {"type": "transcription"}}, "session.type"),
        ({"session": {"type": "realtime", "audio": {"output": {"speed": 9}}}}, None),
    ]:
        r = await _mint(auth_server, body)
        assert r.status_code == 400, (body, r.text)
        if param:
            assert r.json()["error"]["param"] == param, r.text


async def test_an_ephemeral_key_opens_sessions_with_its_config_until_it_expires(
    auth_server: RealtimeServer,
) -> None:
    session = {"type": "realtime", "instructions": "Answer like a pirate."}
    short = (
        await _mint(auth_server, {"expires_after": {"seconds": 10}, "session": session})
    ).json()
    minted_at = time.time()
    ek = short["value"]
    # Over WebRTC, by bearer header: the key's session config applies.
    async with open_call(auth_server.http_url, Microphone(), key=ek) as call:
        created = await call.next_event("session.created")
        assert created["session"]["instructions"] == "Answer like a pirate."
    # Over the WebSocket, by header and by the browser subprotocol.
    async with websockets.connect(
        auth_server.url, additional_headers={"Authorization": f"Bearer {ek}"}
    ) as ws:
        created = json.loads(await ws.recv())
        assert created["session"]["instructions"] == "Answer like a pirate."
    async with websockets.connect(
        auth_server.url, subprotocols=["realtime", f"openai-insecure-api-key.{ek}"]
    ) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
    # The server's own key still opens plain sessions; a forged ek_ never does.
    async with open_call(auth_server.http_url, Microphone(), key=KEY) as call:
        created = await call.next_event("session.created")
        assert created["session"]["instructions"] != "Answer like a pirate."
    for key in ("ek_forged", None, "wrong"):
        with pytest.raises(CallRefused) as refused:
            async with open_call(auth_server.http_url, Microphone(), key=key):
                pass
        assert refused.value.status == 401
    # After its expiry: refused everywhere, saying so.
    await asyncio.sleep(max(0.0, minted_at + 10.5 - time.time()))
    with pytest.raises(CallRefused) as refused:
        async with open_call(auth_server.http_url, Microphone(), key=ek):
            pass
    assert (refused.value.status, refused.value.error["code"]) == (401, "ephemeral_key_expired")
    assert "expired" in refused.value.error["message"]
    with pytest.raises(websockets.exceptions.InvalidStatus) as ws_refused:
        async with websockets.connect(
            auth_server.url, additional_headers={"Authorization": f"Bearer {ek}"}
        ):
            pass
    assert ws_refused.value.response.status_code == 401


# --- the page and TLS ---------------------------------------------------------------------


async def test_the_page_is_served_and_knows_the_server(auth_server: RealtimeServer) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{auth_server.http_url}/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert '{"auth":true,"vad":true,"webrtc":true}' in r.text
    assert "RTCPeerConnection" in r.text and "getUserMedia" in r.text


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_and_wss_with_the_servers_certificate(vad: Any, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    engine = Engine(stt="scripted", llm="scripted", tts="scripted", vad=vad)
    for server in serve(engine, tls_cert=str(cert), tls_key=key):
        assert server.http_url.startswith("https://") and server.url.startswith("wss://")
        trust = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(verify=trust) as http:
            assert (await http.get(f"{server.http_url}/")).status_code == 200
        async with websockets.connect(server.url, ssl=trust) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
        # Plain HTTP on the TLS port gets nothing.
        with pytest.raises(httpx.HTTPError):
            async with httpx.AsyncClient() as http:
                await http.get(server.http_url.replace("https", "http") + "/", timeout=3)
    with pytest.raises(ServerConfigError, match="TLS key"):
        RealtimeServer(engine, port=0, tls_cert=str(cert), tls_key=str(cert)).start()
    with pytest.raises(ServerConfigError, match="both"):
        RealtimeServer(engine, port=0, tls_cert=str(cert))


async def test_webrtc_is_off_unless_asked_for(vad: Any) -> None:
    engine = Engine(stt="scripted", llm="scripted", tts="scripted", vad=vad)
    server = RealtimeServer(engine, port=0)
    server.start()
    try:
        assert server.webrtc_port is None and server.webrtc_candidates == []
        async with httpx.AsyncClient() as http:
            r = await http.post(f"{server.http_url}/v1/realtime/calls", content="v=0")
        assert (r.status_code, r.json()["error"]["code"]) == (404, "webrtc_disabled")
    finally:
        server.stop()
