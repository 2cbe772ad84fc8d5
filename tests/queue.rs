//! Queue behaviour under contention, shutdown, timeouts and each overflow policy.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use speech_to_speech::queue::{
    Overflow, PushError, Pushed, Queue, QueueConfigError, QueueError, spsc,
};

const LONG: Option<Duration> = Some(Duration::from_secs(20));
/// Generous bound on wake-up delays: the test machines are small and shared.
const SLACK: Duration = Duration::from_secs(1);

/// A bitmap that fails the test if any index is marked twice.
struct Seen(Vec<AtomicU8>);

impl Seen {
    fn new(n: usize) -> Self {
        Self((0..n).map(|_| AtomicU8::new(0)).collect())
    }
    fn mark(&self, i: u64) {
        let prev = self.0[i as usize].fetch_add(1, Ordering::Relaxed);
        assert_eq!(prev, 0, "item {i} delivered twice");
    }
    fn count(&self) -> usize {
        self.0
            .iter()
            .filter(|b| b.load(Ordering::Relaxed) == 1)
            .count()
    }
}

fn assert_balanced(q: &Queue<u64>) {
    let s = q.stats();
    assert_eq!(s.pushed, s.popped + s.dropped + s.len as u64, "{s:?}");
}

#[test]
fn mpmc_4x4_block_delivers_everything_exactly_once() {
    const PER: u64 = 250_000;
    const PRODUCERS: u64 = 4;
    let q = Arc::new(Queue::<u64>::new(64, Overflow::Block).unwrap());
    let seen = Arc::new(Seen::new((PER * PRODUCERS) as usize));
    let consumers: Vec<_> = (0..4)
        .map(|_| {
            let (q, seen) = (Arc::clone(&q), Arc::clone(&seen));
            thread::spawn(move || {
                let mut sum = 0u64;
                loop {
                    match q.pop(LONG) {
                        Ok(v) => {
                            seen.mark(v);
                            sum += v;
                        }
                        Err(QueueError::Closed) => return sum,
                        Err(e) => panic!("pop failed: {e}"),
                    }
                }
            })
        })
        .collect();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let q = Arc::clone(&q);
            thread::spawn(move || {
                for i in p * PER..(p + 1) * PER {
                    assert_eq!(q.push(i, LONG).unwrap(), Pushed::Queued);
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    assert!(q.close());
    let sum: u64 = consumers.into_iter().map(|c| c.join().unwrap()).sum();
    let n = PER * PRODUCERS;
    assert_eq!(sum, n * (n - 1) / 2);
    assert_eq!(seen.count(), n as usize);
    let s = q.stats();
    assert_eq!((s.pushed, s.popped, s.dropped, s.len), (n, n, 0, 0));
}

/// Under the drop policies every item ends up in exactly one place: popped,
/// handed back as dropped/evicted, or still queued.
fn mpmc_drop_policy_accounts_for_every_item(policy: Overflow) {
    const PER: u64 = 100_000;
    let q = Arc::new(Queue::<u64>::new(16, policy).unwrap());
    let seen = Arc::new(Seen::new((PER * 4) as usize));
    let dropped_back = Arc::new(AtomicUsize::new(0));
    let consumers: Vec<_> = (0..4)
        .map(|_| {
            let (q, seen) = (Arc::clone(&q), Arc::clone(&seen));
            thread::spawn(move || {
                while let Ok(v) = q.pop(LONG) {
                    seen.mark(v);
                }
            })
        })
        .collect();
    let producers: Vec<_> = (0..4u64)
        .map(|p| {
            let (q, seen, back) = (Arc::clone(&q), Arc::clone(&seen), Arc::clone(&dropped_back));
            thread::spawn(move || {
                for i in p * PER..(p + 1) * PER {
                    match q.try_push(i).unwrap() {
                        Pushed::Queued => {}
                        Pushed::Dropped(v) => {
                            assert_eq!(policy, Overflow::DropNewest);
                            assert_eq!(v, i);
                            seen.mark(v);
                            back.fetch_add(1, Ordering::Relaxed);
                        }
                        Pushed::Evicted(v) => {
                            assert_eq!(policy, Overflow::DropOldest);
                            seen.mark(v);
                            back.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    q.close();
    for c in consumers {
        c.join().unwrap();
    }
    assert_eq!(seen.count(), (PER * 4) as usize);
    let s = q.stats();
    assert_eq!(s.pushed, PER * 4);
    assert_eq!(s.dropped, dropped_back.load(Ordering::Relaxed) as u64);
    assert_eq!(s.len, 0);
    assert_balanced(&q);
}

#[test]
fn mpmc_4x4_drop_newest_accounts_for_every_item() {
    mpmc_drop_policy_accounts_for_every_item(Overflow::DropNewest);
}

#[test]
fn mpmc_4x4_drop_oldest_accounts_for_every_item() {
    mpmc_drop_policy_accounts_for_every_item(Overflow::DropOldest);
}

#[test]
fn mpmc_reject_hands_the_item_back_and_counts_nothing() {
    let q = Queue::new(2, Overflow::Reject).unwrap();
    assert!(q.try_push(1).unwrap().is_queued());
    assert!(q.push(2, LONG).unwrap().is_queued());
    let err = q.try_push(3).unwrap_err();
    assert_eq!((err.kind, err.item), (QueueError::Full, 3));
    // push() never blocks under Reject.
    let err = q.push(4, LONG).unwrap_err();
    assert_eq!((err.kind, err.item), (QueueError::Full, 4));
    assert_eq!((q.pushed(), q.dropped(), q.len()), (2, 0, 2));
    assert_eq!(q.try_pop(), Ok(1));
    assert_eq!(q.try_pop(), Ok(2));
    assert_eq!(q.try_pop(), Err(QueueError::Empty));
    assert_balanced(&q);
}

#[test]
fn mpmc_drop_newest_keeps_the_queue_and_counts_the_drop() {
    let q = Queue::new(2, Overflow::DropNewest).unwrap();
    assert_eq!(q.try_push(1).unwrap(), Pushed::Queued);
    assert_eq!(q.try_push(2).unwrap(), Pushed::Queued);
    assert_eq!(q.try_push(3).unwrap(), Pushed::Dropped(3));
    assert_eq!(q.push(4, LONG).unwrap(), Pushed::Dropped(4));
    assert_eq!((q.pushed(), q.dropped(), q.len()), (4, 2, 2));
    assert_eq!(q.try_pop(), Ok(1));
    assert_eq!(q.try_pop(), Ok(2));
    assert_balanced(&q);
}

#[test]
fn mpmc_drop_oldest_evicts_in_order() {
    let q = Queue::new(3, Overflow::DropOldest).unwrap();
    for i in 0..3 {
        assert_eq!(q.try_push(i).unwrap(), Pushed::Queued);
    }
    assert_eq!(q.try_push(3).unwrap(), Pushed::Evicted(0));
    assert_eq!(q.push(4, LONG).unwrap(), Pushed::Evicted(1));
    assert_eq!((q.pushed(), q.dropped(), q.len()), (5, 2, 3));
    assert_eq!(q.try_pop(), Ok(2));
    assert_eq!(q.try_pop(), Ok(3));
    assert_eq!(q.try_pop(), Ok(4));
    assert_balanced(&q);
}

#[test]
fn mpmc_block_try_push_fails_fast_and_push_waits_for_room() {
    let q = Arc::new(Queue::new(1, Overflow::Block).unwrap());
    assert!(q.try_push(1).unwrap().is_queued());
    assert_eq!(q.try_push(2).unwrap_err().kind, QueueError::Full);
    let q2 = Arc::clone(&q);
    let pusher = thread::spawn(move || q2.push(2, LONG).map_err(|e| e.kind));
    thread::sleep(Duration::from_millis(30));
    assert_eq!(q.len(), 1, "push must wait while the queue is full");
    assert_eq!(q.pop(LONG), Ok(1));
    assert_eq!(pusher.join().unwrap(), Ok(Pushed::Queued));
    assert_eq!(q.pop(LONG), Ok(2));
}

#[test]
fn timeouts_are_honoured() {
    let q = Queue::<u32>::new(1, Overflow::Block).unwrap();
    let wait = Duration::from_millis(60);
    let t = Instant::now();
    assert_eq!(q.pop(Some(wait)), Err(QueueError::Timeout));
    let took = t.elapsed();
    assert!(
        took >= wait && took < wait + SLACK,
        "pop timeout took {took:?}"
    );

    q.try_push(7).unwrap();
    let t = Instant::now();
    let err = q.push(8, Some(wait)).unwrap_err();
    let took = t.elapsed();
    assert_eq!((err.kind, err.item), (QueueError::Timeout, 8));
    assert!(
        took >= wait && took < wait * 5,
        "push timeout took {took:?}"
    );
    assert_eq!(q.pop(Some(Duration::ZERO)), Ok(7));
    assert_eq!(q.pop(Some(Duration::ZERO)), Err(QueueError::Timeout));

    let (mut tx, mut rx) = spsc::<u32>(1, Overflow::Block).unwrap();
    let t = Instant::now();
    assert_eq!(rx.pop(Some(wait)), Err(QueueError::Timeout));
    assert!(t.elapsed() >= wait);
    tx.try_push(1).unwrap();
    let t = Instant::now();
    assert_eq!(
        tx.push(2, Some(wait)).unwrap_err().kind,
        QueueError::Timeout
    );
    assert!(t.elapsed() >= wait);
}

#[test]
fn close_wakes_every_blocked_waiter_promptly() {
    let empty = Arc::new(Queue::<u32>::new(4, Overflow::Block).unwrap());
    let full = Arc::new(Queue::<u32>::new(1, Overflow::Block).unwrap());
    full.try_push(0).unwrap();
    let ready = Arc::new(Barrier::new(7));
    let mut poppers = Vec::new();
    for _ in 0..4 {
        let (q, ready) = (Arc::clone(&empty), Arc::clone(&ready));
        poppers.push(thread::spawn(move || {
            ready.wait();
            let r = q.pop(None);
            (r, Instant::now())
        }));
    }
    let mut pushers = Vec::new();
    for i in 0..2 {
        let (q, ready) = (Arc::clone(&full), Arc::clone(&ready));
        pushers.push(thread::spawn(move || {
            ready.wait();
            let r = q.push(i, None).map_err(|e| (e.kind, e.item));
            (r, Instant::now())
        }));
    }
    ready.wait();
    // Let every thread get past its spin and asleep on the condvar.
    thread::sleep(Duration::from_millis(100));
    let closed_at = Instant::now();
    assert!(empty.close());
    assert!(!empty.close(), "second close reports it was already closed");
    full.close();
    for p in poppers {
        let (r, at) = p.join().unwrap();
        assert_eq!(r, Err(QueueError::Closed));
        assert!(at - closed_at < SLACK);
    }
    for (i, p) in pushers.into_iter().enumerate() {
        let (r, at) = p.join().unwrap();
        assert_eq!(r, Err((QueueError::Closed, i as u32)));
        assert!(at - closed_at < SLACK);
    }
    // The item queued before close is still there to drain.
    assert_eq!(full.pop(None), Ok(0));
    assert_eq!(full.pop(None), Err(QueueError::Closed));
    assert_eq!(full.try_pop(), Err(QueueError::Closed));
}

#[test]
fn close_drains_then_fails_and_refuses_pushes() {
    let q = Queue::new(4, Overflow::DropOldest).unwrap();
    q.try_push("a").unwrap();
    q.try_push("b").unwrap();
    q.close();
    assert!(q.is_closed());
    let Err(PushError { kind, item }) = q.try_push("c") else {
        panic!("push after close must fail");
    };
    assert_eq!((kind, item), (QueueError::Closed, "c"));
    assert_eq!(q.try_pop(), Ok("a"));
    assert_eq!(q.pop(LONG), Ok("b"));
    assert_eq!(q.pop(LONG), Err(QueueError::Closed));
    assert_eq!((q.pushed(), q.popped(), q.dropped()), (2, 2, 0));
}

#[test]
fn construction_errors() {
    assert!(matches!(
        Queue::<u8>::new(0, Overflow::Reject),
        Err(QueueConfigError::InvalidCapacity { capacity: 0, .. })
    ));
    assert!(matches!(
        spsc::<u8>(0, Overflow::Reject),
        Err(QueueConfigError::InvalidCapacity { capacity: 0, .. })
    ));
    assert!(matches!(
        spsc::<u8>(usize::MAX, Overflow::Reject),
        Err(QueueConfigError::InvalidCapacity { .. })
    ));
    assert!(matches!(
        spsc::<u8>(8, Overflow::DropOldest),
        Err(QueueConfigError::UnsupportedPolicy(Overflow::DropOldest))
    ));
    for p in [
        Overflow::Reject,
        Overflow::DropNewest,
        Overflow::DropOldest,
        Overflow::Block,
    ] {
        assert_eq!(p.as_str().parse::<Overflow>(), Ok(p));
    }
    assert!(matches!(
        "drop".parse::<Overflow>(),
        Err(QueueConfigError::UnknownPolicy(_))
    ));
}

#[test]
fn spsc_1x1_block_keeps_order_over_millions() {
    const N: u64 = 2_000_000;
    let (mut tx, mut rx) = spsc::<u64>(256, Overflow::Block).unwrap();
    let producer = thread::spawn(move || {
        for i in 0..N {
            assert_eq!(tx.push(i, LONG).unwrap(), Pushed::Queued);
        }
        // Dropping the producer closes the ring.
    });
    let mut expected = 0;
    loop {
        match rx.pop(LONG) {
            Ok(v) => {
                assert_eq!(v, expected);
                expected += 1;
            }
            Err(QueueError::Closed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    producer.join().unwrap();
    assert_eq!(expected, N);
    let s = rx.stats();
    assert_eq!((s.pushed, s.popped, s.dropped, s.len), (N, N, 0, 0));
}

#[test]
fn spsc_bulk_slices_keep_order_across_wrap_around() {
    const N: u32 = 3_000_000;
    // A capacity that is not a power of two exercises the slot mask.
    let (mut tx, mut rx) = spsc::<f32>(1000, Overflow::Reject).unwrap();
    assert_eq!(tx.capacity(), 1000);
    let producer = thread::spawn(move || {
        let mut next = 0u32;
        let mut chunk = [0f32; 333];
        while next < N {
            let n = chunk.len().min((N - next) as usize);
            for (k, c) in chunk[..n].iter_mut().enumerate() {
                *c = (next + k as u32) as f32;
            }
            let mut off = 0;
            while off < n {
                let w = tx.push_slice(&chunk[off..n]).unwrap();
                if w == 0 {
                    thread::yield_now();
                }
                off += w;
            }
            next += n as u32;
        }
        tx.dropped()
    });
    let mut buf = [0f32; 256];
    let mut expected = 0u32;
    loop {
        match rx.pop_slice_timeout(&mut buf, LONG) {
            Ok(n) => {
                assert!(n > 0);
                for &v in &buf[..n] {
                    // Exact: integers below 2^24 are exact in f32.
                    assert_eq!(v.to_bits(), (expected as f32).to_bits());
                    expected += 1;
                }
            }
            Err(QueueError::Closed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(producer.join().unwrap(), 0);
    assert_eq!(expected, N);
    assert_eq!(rx.popped(), u64::from(N));
}

#[test]
fn spsc_policies_and_skip() {
    let (mut tx, mut rx) = spsc::<u32>(3, Overflow::Reject).unwrap();
    assert_eq!(tx.push_slice(&[1, 2, 3, 4, 5]), Ok(3));
    assert_eq!(tx.try_push(9).unwrap_err().kind, QueueError::Full);
    assert_eq!((tx.pushed(), tx.dropped(), tx.len()), (3, 0, 3));
    assert_eq!(rx.skip(2), 2);
    assert_eq!(rx.try_pop(), Ok(3));
    assert_eq!(rx.try_pop(), Err(QueueError::Empty));
    let s = rx.stats();
    assert_eq!((s.pushed, s.popped, s.dropped, s.len), (3, 1, 2, 0));

    let (mut tx, mut rx) = spsc::<u32>(2, Overflow::DropNewest).unwrap();
    assert_eq!(tx.try_push(1).unwrap(), Pushed::Queued);
    assert_eq!(tx.push_slice(&[2, 3, 4]), Ok(1));
    assert_eq!(tx.push(5, LONG).unwrap(), Pushed::Dropped(5));
    let s = tx.stats();
    assert_eq!((s.pushed, s.popped, s.dropped, s.len), (5, 0, 3, 2));
    let mut out = [0; 4];
    assert_eq!(rx.pop_slice(&mut out), Ok(2));
    assert_eq!(&out[..2], &[1, 2]);
    drop(tx);
    assert!(rx.is_closed());
    assert_eq!(rx.pop_slice(&mut out), Err(QueueError::Closed));
    assert_eq!(rx.pop(LONG), Err(QueueError::Closed));
}

#[test]
fn spsc_consumer_drop_closes_and_items_are_dropped_once() {
    let token = Arc::new(());
    let (mut tx, mut rx) = spsc::<Arc<()>>(4, Overflow::Block).unwrap();
    for _ in 0..3 {
        tx.try_push(Arc::clone(&token)).unwrap();
    }
    drop(rx.try_pop().unwrap());
    assert_eq!(rx.skip(1), 1);
    assert_eq!(Arc::strong_count(&token), 2);
    drop(rx);
    assert_eq!(
        tx.push(Arc::clone(&token), LONG).map_err(|e| e.kind),
        Err(QueueError::Closed)
    );
    drop(tx);
    assert_eq!(
        Arc::strong_count(&token),
        1,
        "ring drop must release queued items"
    );

    let q = Queue::new(4, Overflow::Reject).unwrap();
    q.try_push(Arc::clone(&token)).unwrap();
    drop(q);
    assert_eq!(Arc::strong_count(&token), 1);
}

#[test]
fn spsc_blocking_slices_both_ways_do_not_deadlock() {
    // A producer blocked in push and a consumer blocked in pop_slice_timeout
    // wake each other through the same waiter lock.
    const N: u64 = 200_000;
    let (mut tx, mut rx) = spsc::<u64>(1, Overflow::Block).unwrap();
    let producer = thread::spawn(move || {
        for i in 0..N {
            tx.push(i, LONG).unwrap();
        }
    });
    let mut buf = [0u64; 3];
    let mut expected = 0;
    while let Ok(n) = rx.pop_slice_timeout(&mut buf, LONG) {
        for &v in &buf[..n] {
            assert_eq!(v, expected);
            expected += 1;
        }
    }
    producer.join().unwrap();
    assert_eq!(expected, N);
}

#[test]
fn spsc_blocking_slice_push_waits_for_room_and_times_out() {
    let (mut tx, mut rx) = spsc::<i16>(4, Overflow::Block).unwrap();
    let monitor = tx.monitor();
    assert_eq!(
        tx.push_slice_timeout(&[1, 2, 3, 4, 5, 6], Some(Duration::from_millis(30))),
        Ok(4),
        "a full ring times out with a partial write"
    );
    let consumer = thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0i16; 2];
        while let Ok(n) = rx.pop_slice_timeout(&mut buf, LONG) {
            got.extend_from_slice(&buf[..n]);
            thread::sleep(Duration::from_millis(1));
        }
        got
    });
    let big: Vec<i16> = (5..1000).collect();
    assert_eq!(tx.push_slice_timeout(&big, LONG), Ok(big.len()));
    assert!(monitor.close());
    assert_eq!(tx.push_slice_timeout(&[1], LONG), Err(QueueError::Closed));
    let got = consumer.join().unwrap();
    assert_eq!(got, (1..1000).collect::<Vec<i16>>());
    let s = monitor.stats();
    assert_eq!((s.pushed, s.popped, s.dropped, s.len), (999, 999, 0, 0));
}
