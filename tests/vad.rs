//! The Silero VAD from Rust, with both engines.
//!
//! The model file comes from `S2S_VAD_MODEL`, else from the `silero-vad`
//! package that `.ci/setup` installs into `.venv`; ONNX Runtime likewise from
//! `ORT_DYLIB_PATH`, else the `onnxruntime` wheel in `.venv`. Without them the
//! tests fail and say what to install: a test that needs the model runs it.

mod common;

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use common::{env_or_venv, onnxruntime_library, shared_audio};

use speech_to_speech::vad::{
    SampleRate, SileroState, SileroVad, SileroVadOptions, TurnConfig, VadBackend, VadError,
    VadEvent, VadStream, feed_batch, init_onnxruntime,
};

const ENGINES: [VadBackend; 2] = [VadBackend::Native, VadBackend::OnnxRuntime];

static NATIVE: Mutex<Option<SileroVad>> = Mutex::new(None);
static ORT: Mutex<Option<SileroVad>> = Mutex::new(None);

fn model_path() -> Option<PathBuf> {
    let path = env_or_venv("S2S_VAD_MODEL", "silero_vad/data", |n| {
        n == "silero_vad.onnx"
    });
    assert!(
        path.is_some(),
        "no silero_vad.onnx: run `bash .ci/setup --test` (it installs silero-vad into .venv) \
         or set S2S_VAD_MODEL"
    );
    path
}

/// ONNX Runtime loaded (a missing library fails the test, saying what to install).
fn onnxruntime() -> Option<()> {
    let lib = onnxruntime_library();
    assert!(
        lib.is_some(),
        "no libonnxruntime: run `bash .ci/setup --test` (it installs onnxruntime into .venv) \
         or set ORT_DYLIB_PATH"
    );
    init_onnxruntime(&lib?).unwrap();
    Some(())
}

fn options(engine: VadBackend) -> SileroVadOptions {
    SileroVadOptions {
        backend: engine,
        ..SileroVadOptions::default()
    }
}

/// The shared model of `engine`, or None (with a note) when the environment lacks it.
fn model(engine: VadBackend) -> Option<MutexGuard<'static, Option<SileroVad>>> {
    let path = model_path()?;
    let slot = if engine == VadBackend::Native {
        &NATIVE
    } else {
        onnxruntime()?;
        &ORT
    };
    let mut guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
    if guard.is_none() {
        let vad = SileroVad::new(&path, &options(engine)).unwrap();
        assert_eq!(vad.backend(), engine);
        *guard = Some(vad);
    }
    Some(guard)
}

fn jfk() -> Vec<f32> {
    shared_audio("jfk.wav").unwrap_or_else(|| {
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

/// Run `batch` streams at staggered offsets into `audio` through `vad` as one
/// batch and one by one; returns the largest difference.
fn batched_vs_alone(vad: &mut SileroVad, audio: &[f32], batch: usize, chunks: usize) -> f32 {
    let n = SampleRate::Hz16000.chunk_len();
    let offsets: Vec<usize> = (0..batch).map(|i| (i * 7 % 40) * n).collect();
    let mut batched = vec![SileroState::new(SampleRate::Hz16000); batch];
    let mut alone = batched.clone();
    let mut max_diff = 0.0_f32;
    for k in 0..chunks {
        let chunks: Vec<&[f32]> = offsets
            .iter()
            .map(|&o| &audio[o + k * n..o + (k + 1) * n])
            .collect();
        let mut probs = vec![0.0; batch];
        vad.process_batch(&mut batched, &chunks, &mut probs)
            .unwrap();
        for (i, chunk) in chunks.iter().enumerate() {
            let p = vad.process(&mut alone[i], chunk).unwrap();
            max_diff = max_diff.max((p - probs[i]).abs());
        }
    }
    max_diff
}

#[test]
fn batched_equals_one_by_one() {
    for engine in ENGINES {
        let Some(mut guard) = model(engine) else {
            continue;
        };
        let vad = guard.as_mut().unwrap();
        let max_diff = batched_vs_alone(vad, &jfk(), 3, 100);
        assert!(max_diff <= 1e-5, "{engine}: {max_diff}");
    }
}

#[test]
fn native_batches_of_any_size_equal_one_by_one() {
    // Odd sizes and more streams than one column tile; a smaller batch after
    // a larger one reuses the grown buffers.
    let Some(mut guard) = model(VadBackend::Native) else {
        return;
    };
    let vad = guard.as_mut().unwrap();
    let audio = jfk();
    for batch in [1, 2, 5, 17, 33, 4] {
        let max_diff = batched_vs_alone(vad, &audio, batch, 6);
        assert!(max_diff <= 1e-5, "batch of {batch}: {max_diff}");
    }
}

#[test]
fn native_matches_onnxruntime() {
    let (Some(mut native), Some(mut ort)) =
        (model(VadBackend::Native), model(VadBackend::OnnxRuntime))
    else {
        return;
    };
    let (native, ort) = (native.as_mut().unwrap(), ort.as_mut().unwrap());
    // Whole recordings at 16 kHz, and one at 8 kHz (every other sample: the
    // aliasing does not matter to a comparison of engines).
    let mut cases = vec![(jfk(), SampleRate::Hz16000)];
    if let Some(q) = shared_audio("q_book.wav") {
        cases.push((q.iter().step_by(2).copied().collect(), SampleRate::Hz8000));
    }
    for (audio, rate) in cases {
        let a = native.speech_probabilities(&audio, rate).unwrap();
        let b = ort.speech_probabilities(&audio, rate).unwrap();
        assert_eq!(a.len(), b.len());
        let max_diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(max_diff <= 1e-4, "{rate:?}: {max_diff}");
        // The comparison means something only if both hear speech and silence.
        assert!(
            b.iter().any(|&p| p > 0.9) && b.iter().any(|&p| p < 0.1),
            "{rate:?}"
        );
    }
}

/// A copy of the model in the temp directory, changed by `edit`.
fn edited_model(name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> Option<PathBuf> {
    let mut bytes = std::fs::read(model_path()?).ok()?;
    edit(&mut bytes);
    let path = std::env::temp_dir().join(format!("s2s-vad-{}-{name}.onnx", std::process::id()));
    std::fs::write(&path, bytes).ok()?;
    Some(path)
}

#[test]
fn unrecognised_files_are_clear_errors() {
    let Some(garbage) = edited_model("garbage", |b| b.truncate(1000)) else {
        return;
    };
    for engine in [VadBackend::Native, VadBackend::Auto] {
        let err = SileroVad::new(&garbage, &options(engine)).unwrap_err();
        assert!(
            matches!(&err, VadError::Model(m) if m.contains("native VAD backend")),
            "{err}"
        );
    }
    // The real file with one weight renamed (same length: the protobuf stays
    // valid): ONNX Runtime runs it, the native engine does not know it.
    let renamed = edited_model("renamed", |b| {
        let (from, to) = (b"decoder.rnn.weight_ih", b"decoder.rnn.weight_xx");
        let mut i = 0;
        while let Some(at) = b[i..].windows(from.len()).position(|w| w == from) {
            b[i + at..i + at + to.len()].copy_from_slice(to);
            i += at + to.len();
        }
    })
    .unwrap();
    let err = SileroVad::new(&renamed, &options(VadBackend::Native)).unwrap_err();
    assert!(format!("{err}").contains("decoder.rnn.weight_ih"), "{err}");
    if onnxruntime().is_some() {
        let vad = SileroVad::new(&renamed, &options(VadBackend::Auto)).unwrap();
        assert_eq!(vad.backend(), VadBackend::OnnxRuntime);
    }
    for path in [garbage, renamed] {
        let _ = std::fs::remove_file(path);
    }
}

#[test]
fn damaged_files_never_panic_the_native_loader() {
    let Some(path) = model_path() else { return };
    let bytes = std::fs::read(path).unwrap();
    let mut x = 0x2545_f491_u32;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as usize
    };
    let target = std::env::temp_dir().join(format!("s2s-vad-{}-damaged.onnx", std::process::id()));
    for round in 0..40 {
        let mut damaged = bytes.clone();
        if round % 2 == 0 {
            damaged.truncate(next() % bytes.len());
        } else {
            for _ in 0..4 {
                let at = next() % damaged.len();
                damaged[at] = next() as u8;
            }
        }
        std::fs::write(&target, &damaged).unwrap();
        // Either a clear error or a model that runs (damaged weights still
        // make a network); never a panic.
        if let Ok(mut vad) = SileroVad::new(&target, &options(VadBackend::Native)) {
            let mut state = SileroState::new(SampleRate::Hz16000);
            let _ = vad.process(&mut state, &[0.1; 512]);
        }
    }
    let _ = std::fs::remove_file(target);
}

#[test]
fn a_turn_is_found_in_speech_and_streams_do_not_interfere() {
    for engine in ENGINES {
        let Some(mut guard) = model(engine) else {
            continue;
        };
        turn_and_isolation(guard.as_mut().unwrap());
    }
}

fn turn_and_isolation(vad: &mut SileroVad) {
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
    for engine in ENGINES {
        let Some(mut guard) = model(engine) else {
            continue;
        };
        let vad = guard.as_mut().unwrap();
        let mut state = SileroState::new(SampleRate::Hz16000);
        let err = vad.process(&mut state, &[0.0; 100]).unwrap_err();
        assert!(matches!(err, VadError::InvalidInput(_)), "{err}");
        let err = SileroVad::new(
            &PathBuf::from("/nonexistent/silero_vad.onnx"),
            &options(engine),
        )
        .unwrap_err();
        assert!(matches!(err, VadError::ModelNotFound { .. }), "{err}");
    }
}
