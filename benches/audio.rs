//! Sample-format conversion and G.711 throughput on 20 ms frames; the FLAC and Ogg Opus
//! encoders of `/v1/audio/speech` on one second of 24 kHz audio, against the resampling
//! the endpoint already does on the same second (Piper's 22.05 kHz to 24 kHz).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

use speech_to_speech::audio::flac::Flac;
use speech_to_speech::audio::ogg_opus::OggOpus;
use speech_to_speech::audio::resample::Resampler;
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

/// One second of a voice-like signal: a gliding tone with harmonics, a syllable-rate
/// envelope and a little noise (not trivially compressible).
fn voice_like(rate: u32) -> Vec<f32> {
    let mut seed = 0x2545_f491_u32;
    (0..rate)
        .map(|i| {
            let t = i as f32 / rate as f32;
            let f0 = 120.0 + 40.0 * (t * 3.0).sin();
            let phase = std::f32::consts::TAU * f0 * t;
            let envelope = 0.5 + 0.5 * (std::f32::consts::TAU * 4.0 * t).sin();
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let noise = (seed as f32 / u32::MAX as f32 - 0.5) * 0.02;
            envelope * (0.3 * phase.sin() + 0.15 * (2.0 * phase).sin() + 0.08 * (3.0 * phase).sin())
                + noise
        })
        .collect()
}

fn bench_speech_encoders(c: &mut Criterion) {
    let piper = voice_like(22_050);
    let bytes = pcm::f32_to_pcm16(&voice_like(24_000));
    let mut resampler = Resampler::new(22_050, 24_000).unwrap();
    let mut resampled = vec![0f32; resampler.output_len_max(piper.len())];
    let mut g = c.benchmark_group("speech_encode_1s_24k");
    g.throughput(Throughput::Elements(24_000));
    g.bench_function("resample_22k_to_24k_reference", |b| {
        b.iter(|| {
            resampler
                .process_into(black_box(&piper), &mut resampled)
                .unwrap()
        });
    });
    g.bench_function("flac", |b| {
        b.iter(|| {
            let mut flac = Flac::new(24_000);
            let mut out = flac.push(black_box(&bytes));
            out.extend(flac.finish());
            out
        });
    });
    g.bench_function("ogg_opus", |b| {
        b.iter(|| {
            let mut ogg = OggOpus::new(24_000, 1).unwrap();
            let mut out = ogg.push(black_box(&bytes)).unwrap();
            out.extend(ogg.finish().unwrap());
            out
        });
    });
    g.finish();
}

criterion_group!(benches, bench_pcm, bench_g711, bench_speech_encoders);
criterion_main!(benches);
