//! Sample-format conversion and G.711 throughput on 20 ms frames.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

use speech_to_speech::audio::{g711, pcm};

fn frame_i16(n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| ((i as f32 * 0.05).sin() * 12000.0) as i16)
        .collect()
}

fn bench_pcm(c: &mut Criterion) {
    let n = 480; // 20 ms at 24 kHz
    let bytes = pcm::i16_to_pcm16(&frame_i16(n));
    let mut f = vec![0f32; n];
    let mut back = vec![0u8; n * 2];
    let mut g = c.benchmark_group("pcm16");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("to_f32_20ms_24k", |b| {
        b.iter(|| pcm::pcm16_to_f32_into(black_box(&bytes), &mut f));
    });
    g.bench_function("from_f32_20ms_24k", |b| {
        b.iter(|| pcm::f32_to_pcm16_into(black_box(&f), &mut back));
    });
    g.finish();
}

fn bench_g711(crit: &mut Criterion) {
    let n = 160; // 20 ms at 8 kHz
    let pcm_in = frame_i16(n);
    let mut codes = vec![0u8; n];
    let mut decoded = vec![0i16; n];
    let mut g = crit.benchmark_group("g711");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("mulaw_encode_20ms", |b| {
        b.iter(|| g711::mulaw_encode_into(black_box(&pcm_in), &mut codes));
    });
    g.bench_function("mulaw_decode_20ms", |b| {
        b.iter(|| g711::mulaw_decode_into(black_box(&codes), &mut decoded));
    });
    g.bench_function("alaw_encode_20ms", |b| {
        b.iter(|| g711::alaw_encode_into(black_box(&pcm_in), &mut codes));
    });
    g.bench_function("alaw_decode_20ms", |b| {
        b.iter(|| g711::alaw_decode_into(black_box(&codes), &mut decoded));
    });
    g.finish();
}

criterion_group!(benches, bench_pcm, bench_g711);
criterion_main!(benches);
