//! A Smart Turn decision allocates nothing on the Rust heap: neither the
//! log-mel front end nor the model call (its input and output tensors are
//! preallocated). Counted with a global allocator that tallies this thread's
//! allocations; ONNX Runtime's own C++ heap is not Rust's and is not counted.

mod common;

use common::allocations;
use speech_to_speech::vad::mel::{FEATURES_LEN, WINDOW_SAMPLES};
use speech_to_speech::vad::{LogMel, SmartTurn, init_onnxruntime};

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

fn speechlike(len: usize) -> Vec<f32> {
    (0..len)
        .map(|k| {
            let t = k as f32 / 16_000.0;
            0.3 * (std::f32::consts::TAU * (150.0 + 40.0 * t) * t).sin() * (t * 3.0).sin().abs()
        })
        .collect()
}

#[test]
fn the_front_end_does_not_allocate() {
    // The counter does count.
    let probe = allocations();
    std::hint::black_box(vec![0u8; 16]);
    assert_eq!(allocations(), probe + 1);

    let audio = speechlike(WINDOW_SAMPLES + 20_000);
    let mut mel = LogMel::new();
    let mut out = vec![0.0_f32; FEATURES_LEN];
    let before = allocations();
    // Empty, shorter than one frame, a short turn, exactly 8 s, longer.
    for len in [0, 100, 32_000, WINDOW_SAMPLES, audio.len()] {
        mel.compute(&audio[..len], &mut out).unwrap();
    }
    assert_eq!(allocations() - before, 0);
}

#[test]
fn a_decision_does_not_allocate() {
    let lib = common::onnxruntime_library()
        .expect("no libonnxruntime: run .ci/setup (pip install onnxruntime) or set ORT_DYLIB_PATH");
    init_onnxruntime(&lib).unwrap();
    let path = common::smart_turn_model()
        .expect("no smart-turn-v3.2-cpu.onnx: run .ci/setup or set S2S_TURN_MODEL");
    let mut model = SmartTurn::load(&path, 1).unwrap();
    let audio = speechlike(WINDOW_SAMPLES);
    model.predict(&audio).unwrap();
    let mut per_call = Vec::new();
    for len in [16_000, 48_000, WINDOW_SAMPLES] {
        let before = allocations();
        model.predict(&audio[..len]).unwrap();
        per_call.push(allocations() - before);
    }
    assert_eq!(per_call, [0, 0, 0]);
}
