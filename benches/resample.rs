//! Streaming resampler throughput on 20 ms chunks, the size a realtime
//! session feeds it.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use speech_to_speech::audio::resample::Resampler;
use std::hint::black_box;

fn streaming(c: &mut Criterion) {
    let mut group = c.benchmark_group("resample_20ms");
    for (input_rate, output_rate) in [
        (24000, 16000),
        (16000, 24000),
        (22050, 24000),
        (48000, 16000),
    ] {
        let chunk = input_rate as usize / 50;
        let input: Vec<f32> = (0..chunk).map(|k| 0.5 * (k as f32 * 0.05).sin()).collect();
        let mut r = Resampler::new(input_rate, output_rate).unwrap();
        let mut out = vec![0.0; r.output_len_max(chunk)];
        group.throughput(Throughput::Elements(chunk as u64));
        group.bench_function(format!("{input_rate}->{output_rate}"), |b| {
            b.iter(|| {
                r.process_into(black_box(&input), black_box(&mut out))
                    .unwrap()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, streaming);
criterion_main!(benches);
