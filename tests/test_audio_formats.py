"""PCM16 and G.711 conversions through the Python API."""

from __future__ import annotations

import numpy as np
import pytest

import speech_to_speech as s2s


def test_pcm16_round_trip_every_int16() -> None:
    samples = np.arange(-32768, 32768, dtype=np.int16)
    data = s2s.int16_to_pcm16(samples)
    assert data == samples.astype("<i2").tobytes()
    assert np.array_equal(s2s.pcm16_to_int16(data), samples)
    f = s2s.pcm16_to_float32(data)
    assert f.dtype == np.float32
    assert np.array_equal(f, samples.astype(np.float32) / 32768.0)
    assert s2s.float32_to_pcm16(f) == data


def test_float_encode_rounds_and_clips() -> None:
    x = np.array([2.0, -2.0, 0.25, np.nan], dtype=np.float32)
    out = np.frombuffer(s2s.float32_to_pcm16(x), dtype="<i2")
    assert out.tolist() == [32767, -32768, 8192, 0]


def test_odd_byte_count_is_a_clear_error() -> None:
    with pytest.raises(s2s.OddByteCountError, match="odd number of bytes"):
        s2s.pcm16_to_float32(b"\x00\x01\x02")
    with pytest.raises(s2s.AudioFormatError):
        s2s.pcm16_to_int16(b"\x00")
    assert issubclass(s2s.OddByteCountError, s2s.SpeechToSpeechError)


def _ref_ulaw_decode(code: int) -> int:
    # G.711 mu-law expansion as the ITU-T G.191 tools state it.
    sign = -1 if code < 0x80 else 1
    inv = ~code & 0xFF
    exp = (inv >> 4) & 7
    mant = inv & 0xF
    step = 4 << (exp + 1)
    return sign * ((0x80 << exp) + step * mant + step // 2 - 4 * 33)


def _ref_alaw_decode(code: int) -> int:
    ix = (code ^ 0x55) & 0x7F
    exp = ix >> 4
    mant = ix & 0xF
    if exp > 0:
        mant += 16
    mant = (mant << 4) + 8
    if exp > 1:
        mant <<= exp - 1
    return mant if code > 127 else -mant


def test_g711_decode_tables_match_the_standard() -> None:
    codes = bytes(range(256))
    assert s2s.mulaw_decode(codes).tolist() == [_ref_ulaw_decode(c) for c in range(256)]
    assert s2s.alaw_decode(codes).tolist() == [_ref_alaw_decode(c) for c in range(256)]


def test_g711_encode_inverts_decode() -> None:
    codes = np.arange(256, dtype=np.uint8).tobytes()
    assert s2s.alaw_encode(s2s.alaw_decode(codes)) == codes
    again = s2s.mulaw_encode(s2s.mulaw_decode(codes))
    # Both zero codes (0x7F, 0xFF) decode to 0, which encodes as 0xFF.
    assert again == codes.replace(b"\x7f", b"\xff")


def test_g711_speech_snr() -> None:
    # Companding keeps a speech-level tone around 38 dB SNR (G.711's design point).
    t = np.arange(8000) / 8000.0
    x = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    for enc, dec in ((s2s.mulaw_encode, s2s.mulaw_decode), (s2s.alaw_encode, s2s.alaw_decode)):
        y = dec(enc(x)).astype(np.float64)
        err = y - x
        snr = 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum(err**2))
        assert 33 < snr < 45, snr
