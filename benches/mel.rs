//! The Smart Turn log-mel front end: one decision's features, for a short turn
//! (2 s, mostly padding) and a full 8 s window.

use criterion::{Criterion, criterion_group, criterion_main};
use speech_to_speech::vad::LogMel;
use speech_to_speech::vad::mel::{FEATURES_LEN, SAMPLE_RATE};
use std::hint::black_box;

fn signal(seconds: usize) -> Vec<f32> {
    // A chirp with a little noise: realistic magnitudes, no denormals.
    let mut x: u32 = 0x9E37_79B9;
    (0..seconds * SAMPLE_RATE as usize)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let t = i as f32 / SAMPLE_RATE as f32;
            0.3 * (std::f32::consts::TAU * (200.0 + 150.0 * t) * t).sin()
                + 0.01 * (x as f32 / u32::MAX as f32 - 0.5)
        })
        .collect()
}

fn log_mel(c: &mut Criterion) {
    let mut group = c.benchmark_group("log_mel");
    let mut mel = LogMel::new();
    let mut out = vec![0.0_f32; FEATURES_LEN];
    for seconds in [2, 8] {
        let audio = signal(seconds);
        group.bench_function(format!("{seconds}s"), |b| {
            b.iter(|| mel.compute(black_box(&audio), black_box(&mut out)).unwrap());
        });
    }
    group.finish();
}

criterion_group!(benches, log_mel);
criterion_main!(benches);
