//! Silero VAD, both engines: one chunk of one stream, and a batch of 32 streams.
//!
//! Needs `S2S_VAD_MODEL` (`silero_vad.onnx`) for the native engine and also
//! `ORT_DYLIB_PATH` (`libonnxruntime.so` from the onnxruntime wheel) for the
//! ONNX Runtime engine; without them it says so and skips those cases.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput};
use speech_to_speech::vad::{
    SampleRate, SileroState, SileroVad, SileroVadOptions, VadBackend, init_onnxruntime,
};

/// Streams in the batched benchmark.
const BATCH: usize = 32;

fn signal(len: usize, seed: u32) -> Vec<f32> {
    // A cheap deterministic mix of a tone and noise: the model's cost does not
    // depend on the content, but realistic values avoid denormal paths.
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let noise = (x as f32 / u32::MAX as f32 - 0.5) * 0.05;
            0.3 * (i as f32 * 0.07).sin() + noise
        })
        .collect()
}

fn main() {
    let Some(model) = std::env::var_os("S2S_VAD_MODEL").map(PathBuf::from) else {
        eprintln!(
            "benches/vad.rs skipped: set S2S_VAD_MODEL to silero_vad.onnx \
             (pip install --no-deps silero-vad)"
        );
        return;
    };
    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("silero_vad");
    for engine in [VadBackend::Native, VadBackend::OnnxRuntime] {
        if engine == VadBackend::OnnxRuntime {
            let Some(lib) = std::env::var_os("ORT_DYLIB_PATH") else {
                eprintln!(
                    "benches/vad.rs: ONNX Runtime cases skipped: set ORT_DYLIB_PATH to \
                     libonnxruntime.so (pip install onnxruntime)"
                );
                continue;
            };
            if let Err(e) = init_onnxruntime(&PathBuf::from(lib)) {
                eprintln!("benches/vad.rs: ONNX Runtime cases skipped: {e}");
                continue;
            }
        }
        let options = SileroVadOptions {
            backend: engine,
            ..SileroVadOptions::default()
        };
        match SileroVad::new(&model, &options) {
            Ok(vad) => bench_engine(&mut group, vad),
            Err(e) => eprintln!("benches/vad.rs: {engine} cases skipped: {e}"),
        }
    }
    group.finish();
    criterion.final_summary();
}

fn bench_engine(group: &mut BenchmarkGroup<'_, WallTime>, mut vad: SileroVad) {
    let engine = vad.backend();
    let rate = SampleRate::Hz16000;
    let n = rate.chunk_len();
    let audio = signal(n * 64, 1);
    let mut state = SileroState::new(rate);
    let mut step = 0;
    group.throughput(Throughput::Elements(1));
    group.bench_function(format!("{engine}/one_stream_one_chunk"), |b| {
        b.iter(|| {
            let chunk = &audio[(step % 64) * n..(step % 64 + 1) * n];
            step += 1;
            black_box(vad.process(&mut state, black_box(chunk)).unwrap())
        });
    });

    let streams: Vec<Vec<f32>> = (0..BATCH).map(|s| signal(n * 16, s as u32 + 2)).collect();
    let mut states: Vec<SileroState> = (0..BATCH).map(|_| SileroState::new(rate)).collect();
    let mut probs = vec![0.0_f32; BATCH];
    let mut j = 0;
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function(format!("{engine}/batch_32_streams_one_chunk"), |b| {
        b.iter(|| {
            let k = j % 16;
            j += 1;
            let chunks: Vec<&[f32]> = streams.iter().map(|s| &s[k * n..(k + 1) * n]).collect();
            vad.process_batch(&mut states, &chunks, &mut probs).unwrap();
            black_box(probs[0])
        });
    });
}
