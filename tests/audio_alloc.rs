//! The audio front end's per-frame paths do not allocate (the noise
//! suppressor, the device callbacks) or allocate a bounded amount (the echo
//! canceller, inside the `aec3` port), counted with a global allocator that
//! tallies this thread's allocations.

use speech_to_speech::audio::aec::EchoCanceller;
use speech_to_speech::audio::device::{CaptureCallback, PlaybackCallback};
use speech_to_speech::audio::ns::{NoiseSuppressor, NsPreset};
use speech_to_speech::queue::{Overflow, spsc};

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

mod common;

use common::allocations;

fn signal(n: usize) -> Vec<f32> {
    (0..n)
        .map(|k| 0.3 * (k as f32 * 0.05).sin() + 0.1 * ((k * 7919) % 201) as f32 / 200.0)
        .collect()
}

#[test]
fn the_counter_counts() {
    let probe = allocations();
    std::hint::black_box(vec![0u8; 16]);
    assert_eq!(allocations(), probe + 1);
}

/// Our framing around AEC3 allocates nothing, but the `aec3` port's block
/// processor builds small temporaries (vectors in the echo remover and the
/// suppressor) on every block. This pins the count, so that a regression in
/// our code, or a leak that grows with time, fails here: it is a bounded
/// number of small blocks per frame on the processing thread, never in a
/// device callback.
#[test]
fn echo_canceller_allocations_per_frame_are_bounded_and_steady() {
    for rate in [16000, 48000] {
        let mut aec = EchoCanceller::new(rate).unwrap();
        let frame = aec.frame_len();
        let far = signal(frame * 700);
        let mic: Vec<f32> = far.iter().map(|s| s * 0.3).collect();
        let mut out = vec![0.0; frame];
        let mut run = |range: std::ops::Range<usize>| {
            let before = allocations();
            for k in range.clone() {
                aec.push_far_end(&far[k * frame..(k + 1) * frame]);
                aec.process_into(&mic[k * frame..(k + 1) * frame], &mut out)
                    .unwrap();
            }
            (allocations() - before) as f64 / range.len() as f64
        };
        run(0..100);
        let early = run(100..400);
        let late = run(400..700);
        eprintln!("{rate} Hz: {early:.1} then {late:.1} allocations per 10 ms frame");
        assert!(late <= 64.0, "{rate} Hz: {late} allocations per frame");
        assert!(
            late <= early * 1.1 + 1.0,
            "{rate} Hz: growing, {early} then {late}"
        );
    }
}

#[test]
fn noise_suppressor_frames_do_not_allocate() {
    let mut ns = NoiseSuppressor::new(16000, NsPreset::FarField).unwrap();
    let input = signal(16000 * 3);
    let mut out = vec![0.0; input.len()];
    ns.process_into(&input[..16000], &mut out[..16000]).unwrap();
    let before = allocations();
    for (i, o) in input[16000..].chunks(160).zip(out[16000..].chunks_mut(160)) {
        ns.process_into(i, o).unwrap();
    }
    assert_eq!(allocations() - before, 0);
}

#[test]
fn device_callbacks_do_not_allocate() {
    let (tx, mut rx) = spsc::<f32>(4096, Overflow::DropNewest).unwrap();
    let mut capture = CaptureCallback::new(tx, 2);
    let (ref_tx, _ref_rx) = spsc::<f32>(4096, Overflow::DropNewest).unwrap();
    let (mut playback, mut writer) = PlaybackCallback::standalone(4096, 2, Some(ref_tx)).unwrap();
    let input_i16: Vec<i16> = (0..960).map(|k| (k * 31 % 2000) as i16).collect();
    let mut out_f32 = vec![0.0f32; 960];
    let mut sink = vec![0.0f32; 4096];
    let samples = signal(480);
    let before = allocations();
    for _ in 0..100 {
        capture.process(&input_i16);
        rx.pop_slice(&mut sink).unwrap();
        writer.push_slice(&samples).unwrap();
        playback.process(&mut out_f32);
    }
    assert_eq!(allocations() - before, 0);
}
