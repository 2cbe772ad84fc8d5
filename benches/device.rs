//! The device callbacks' real-time path: one 10 ms period at 48 kHz stereo,
//! converted and moved through the SPSC ring, as the audio thread runs it.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use speech_to_speech::audio::device::{CaptureCallback, PlaybackCallback};
use speech_to_speech::queue::{Overflow, spsc};
use std::hint::black_box;

const FRAMES: usize = 480;

fn capture(c: &mut Criterion) {
    let mut group = c.benchmark_group("device_capture_10ms_48k_stereo");
    group.throughput(Throughput::Elements(FRAMES as u64));
    let (tx, mut rx) = spsc::<f32>(FRAMES * 4, Overflow::DropNewest).unwrap();
    let mut cb = CaptureCallback::new(tx, 2);
    let mut sink = vec![0.0f32; FRAMES];
    let i16_data: Vec<i16> = (0..FRAMES * 2).map(|k| (k * 37 % 4000) as i16).collect();
    let f32_data: Vec<f32> = i16_data.iter().map(|&s| f32::from(s) / 32768.0).collect();
    group.bench_function("i16", |b| {
        b.iter(|| {
            cb.process(black_box(&i16_data));
            rx.pop_slice(&mut sink).unwrap()
        });
    });
    group.bench_function("f32", |b| {
        b.iter(|| {
            cb.process(black_box(&f32_data));
            rx.pop_slice(&mut sink).unwrap()
        });
    });
    group.finish();
}

fn playback(c: &mut Criterion) {
    let mut group = c.benchmark_group("device_playback_10ms_48k_stereo");
    group.throughput(Throughput::Elements(FRAMES as u64));
    let samples: Vec<f32> = (0..FRAMES).map(|k| 0.5 * (k as f32 * 0.05).sin()).collect();
    let mut out_i16 = vec![0i16; FRAMES * 2];
    let mut out_f32 = vec![0.0f32; FRAMES * 2];
    for with_reference in [false, true] {
        let (ref_tx, mut ref_rx) = spsc::<f32>(FRAMES * 4, Overflow::DropNewest).unwrap();
        let reference = with_reference.then_some(ref_tx);
        let (mut cb, mut tx) = PlaybackCallback::standalone(FRAMES * 4, 2, reference).unwrap();
        let mut sink = vec![0.0f32; FRAMES];
        let tag = if with_reference { "+reference" } else { "" };
        group.bench_function(format!("i16{tag}"), |b| {
            b.iter(|| {
                tx.push_slice(&samples).unwrap();
                cb.process(black_box(&mut out_i16));
                // Without a reference the ring is closed: nothing to drain.
                ref_rx.pop_slice(&mut sink).unwrap_or(0)
            });
        });
        group.bench_function(format!("f32{tag}"), |b| {
            b.iter(|| {
                tx.push_slice(&samples).unwrap();
                cb.process(black_box(&mut out_f32));
                // Without a reference the ring is closed: nothing to drain.
                ref_rx.pop_slice(&mut sink).unwrap_or(0)
            });
        });
        // Underrun: nothing queued, silence out.
        group.bench_function(format!("underrun_f32{tag}"), |b| {
            b.iter(|| {
                cb.process(black_box(&mut out_f32));
                // Without a reference the ring is closed: nothing to drain.
                ref_rx.pop_slice(&mut sink).unwrap_or(0)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, capture, playback);
criterion_main!(benches);
