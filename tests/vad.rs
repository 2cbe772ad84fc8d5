//! The Silero VAD through ONNX Runtime, from Rust.
//!
//! These need the runtime and the model: `ORT_DYLIB_PATH` (`libonnxruntime.so`
//! from the onnxruntime wheel) and `S2S_VAD_MODEL` (`silero_vad.onnx`). Without
//! them each test prints a note and passes; the pytest suite always runs the
//! real model.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use speech_to_speech::vad::{
    SampleRate, SileroState, SileroVad, SileroVadOptions, TurnConfig, VadError, VadEvent,
    VadStream, feed_batch, init_onnxruntime,
};

static MODEL: Mutex<Option<SileroVad>> = Mutex::new(None);

/// The shared model, or None (with a note) when the environment lacks it.
fn model() -> Option<MutexGuard<'static, Option<SileroVad>>> {
    let (Some(lib), Some(path)) = (
        std::env::var_os("ORT_DYLIB_PATH"),
        std::env::var_os("S2S_VAD_MODEL"),
    ) else {
        eprintln!("skipped: set ORT_DYLIB_PATH and S2S_VAD_MODEL to run the ONNX tests");
        return None;
    };
    let mut guard = MODEL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if guard.is_none() {
        init_onnxruntime(&PathBuf::from(lib)).unwrap();
        *guard = Some(SileroVad::new(&PathBuf::from(path), &SileroVadOptions::default()).unwrap());
    }
    Some(guard)
}

/// 16-bit mono WAV data as f32 (only what the shared test files need).
fn read_wav(path: &str) -> Option<Vec<f32>> {
    let bytes = std::fs::read(path).ok()?;
    let mut i = 12;
    while i + 8 <= bytes.len() {
        let size = u32::from_le_bytes(bytes[i + 4..i + 8].try_into().ok()?) as usize;
        if &bytes[i..i + 4] == b"data" {
            let data = &bytes[i + 8..(i + 8 + size).min(bytes.len())];
            return Some(
                data.chunks_exact(2)
                    .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
                    .collect(),
            );
        }
        i += 8 + size + (size & 1);
    }
    None
}

fn jfk() -> Vec<f32> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/audio/jfk.wav");
    read_wav(path).unwrap_or_else(|| {
        // A tone burst stands in when the shared audio is not beside the repo.
        (0..16_000 * 4)
            .map(|i| {
                if (16_000..48_000).contains(&i) {
                    0.3 * (i as f32 * 0.05).sin()
                } else {
                    0.0
                }
            })
            .collect()
    })
}

#[test]
fn batched_equals_one_by_one() {
    let Some(mut guard) = model() else { return };
    let vad = guard.as_mut().unwrap();
    let audio = jfk();
    let n = SampleRate::Hz16000.chunk_len();
    let offsets = [0, 7 * n, 40 * n];
    let mut batched = vec![SileroState::new(SampleRate::Hz16000); offsets.len()];
    let mut alone = batched.clone();
    let mut max_diff = 0.0_f32;
    for k in 0..100 {
        let chunks: Vec<&[f32]> = offsets
            .iter()
            .map(|&o| &audio[o + k * n..o + (k + 1) * n])
            .collect();
        let mut probs = vec![0.0; offsets.len()];
        vad.process_batch(&mut batched, &chunks, &mut probs)
            .unwrap();
        for (i, chunk) in chunks.iter().enumerate() {
            let p = vad.process(&mut alone[i], chunk).unwrap();
            max_diff = max_diff.max((p - probs[i]).abs());
        }
    }
    assert!(max_diff <= 1e-5, "{max_diff}");
}

#[test]
fn a_turn_is_found_in_speech_and_streams_do_not_interfere() {
    let Some(mut guard) = model() else { return };
    let vad = guard.as_mut().unwrap();
    let mut audio = jfk();
    audio.extend(std::iter::repeat_n(0.0, 16_000));
    let config = TurnConfig::default();

    let mut alone = VadStream::new(16_000, &config).unwrap();
    let mut expected = Vec::new();
    for frame in audio.chunks(320) {
        alone.feed(vad, frame, &mut expected).unwrap();
    }
    alone.flush(vad, &mut expected).unwrap();
    assert!(
        matches!(expected[0], VadEvent::SpeechStarted { .. }),
        "{expected:?}"
    );
    assert!(
        expected
            .iter()
            .any(|e| matches!(e, VadEvent::Utterance { .. }))
    );

    // The same audio in two streams fed as one batch, one of them offset.
    let mut a = VadStream::new(16_000, &config).unwrap();
    let mut b = VadStream::new(16_000, &config).unwrap();
    let mut events = vec![Vec::new(), Vec::new()];
    let silence = vec![0.0_f32; 700];
    feed_batch(vad, &mut [&mut b], &[&silence], &mut events[1..]).unwrap();
    for frame in audio.chunks(320) {
        feed_batch(vad, &mut [&mut a, &mut b], &[frame, frame], &mut events).unwrap();
    }
    a.flush(vad, &mut events[0]).unwrap();
    assert_eq!(events[0], expected);
    let starts = |ev: &[VadEvent]| {
        ev.iter()
            .filter(|e| matches!(e, VadEvent::SpeechStarted { .. }))
            .count()
    };
    assert_eq!(starts(&events[1]), starts(&expected));
}

#[test]
fn wrong_chunk_length_and_missing_model_are_errors() {
    let Some(mut guard) = model() else { return };
    let vad = guard.as_mut().unwrap();
    let mut state = SileroState::new(SampleRate::Hz16000);
    let err = vad.process(&mut state, &[0.0; 100]).unwrap_err();
    assert!(matches!(err, VadError::InvalidInput(_)), "{err}");
    let err = SileroVad::new(
        &PathBuf::from("/nonexistent/silero_vad.onnx"),
        &SileroVadOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, VadError::ModelNotFound { .. }), "{err}");
}
