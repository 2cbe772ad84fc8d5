//! Queue throughput on one thread and hand-off latency between two threads.

use std::hint::black_box;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use speech_to_speech::queue::{Overflow, Queue, spsc};

const BATCH: u64 = 1024;
const FRAMES: u64 = 8;
const LONG: Option<Duration> = Some(Duration::from_secs(10));

fn single_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue/single_thread");
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("mpmc_push_pop", |b| {
        let q = Queue::new(BATCH as usize, Overflow::Reject).unwrap();
        b.iter(|| {
            for i in 0..BATCH {
                let _ = q.try_push(black_box(i));
            }
            for _ in 0..BATCH {
                black_box(q.try_pop().ok());
            }
        });
    });
    g.bench_function("spsc_push_pop", |b| {
        let (mut tx, mut rx) = spsc(BATCH as usize, Overflow::Reject).unwrap();
        b.iter(|| {
            for i in 0..BATCH {
                let _ = tx.try_push(black_box(i));
            }
            for _ in 0..BATCH {
                black_box(rx.try_pop().ok());
            }
        });
    });
    // 10 ms frames at 16 kHz; the ring size makes the copies wrap around.
    g.throughput(Throughput::Elements(FRAMES * 160));
    g.bench_function("spsc_f32_frames_of_160", |b| {
        let (mut tx, mut rx) = spsc::<f32>(1000, Overflow::Reject).unwrap();
        let frame = [0.25f32; 160];
        let mut out = [0f32; 160];
        b.iter(|| {
            for _ in 0..FRAMES {
                black_box(tx.push_slice(black_box(&frame)).ok());
                black_box(rx.pop_slice(&mut out).ok());
            }
        });
    });
    g.finish();
}

/// Round trips through a pair of queues (ping and pong) between two threads,
/// the other thread blocked in `pop`. Reports the time per round trip.
fn ping_pong(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue/ping_pong_round_trip");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    g.bench_function("mpmc_blocking", |b| {
        let ping = Arc::new(Queue::<u64>::new(1, Overflow::Block).unwrap());
        let pong = Arc::new(Queue::<u64>::new(1, Overflow::Block).unwrap());
        let echo = {
            let (ping, pong) = (Arc::clone(&ping), Arc::clone(&pong));
            thread::spawn(move || {
                while let Ok(v) = ping.pop(None) {
                    let _ = pong.push(v, LONG);
                }
            })
        };
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters {
                let _ = ping.push(i, LONG);
                black_box(pong.pop(LONG).ok());
            }
            start.elapsed()
        });
        ping.close();
        echo.join().unwrap();
    });
    g.bench_function("spsc_blocking", |b| {
        let (mut ping_tx, mut ping_rx) = spsc::<u64>(1, Overflow::Block).unwrap();
        let (mut pong_tx, mut pong_rx) = spsc::<u64>(1, Overflow::Block).unwrap();
        let echo = thread::spawn(move || {
            while let Ok(v) = ping_rx.pop(None) {
                let _ = pong_tx.push(v, LONG);
            }
        });
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters {
                let _ = ping_tx.push(i, LONG);
                black_box(pong_rx.pop(LONG).ok());
            }
            start.elapsed()
        });
        drop(ping_tx);
        echo.join().unwrap();
    });
    g.finish();
}

criterion_group!(benches, single_thread, ping_pong);
criterion_main!(benches);
