//! The resampler's per-call methods never allocate: counted with a global
//! allocator that tallies this thread's allocations.

mod common;

use common::allocations;
use speech_to_speech::audio::resample::{Resampler, SUPPORTED_RATES};

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

#[test]
fn process_flush_and_reset_do_not_allocate() {
    // The counter does count.
    let probe = allocations();
    std::hint::black_box(vec![0u8; 16]);
    assert_eq!(allocations(), probe + 1);

    let input: Vec<f32> = (0..20_000).map(|k| (k as f32 * 0.01).sin()).collect();
    for &i in &SUPPORTED_RATES {
        for &o in &SUPPORTED_RATES {
            let mut r = Resampler::new(i, o).unwrap();
            let mut out = vec![0.0; r.output_len_max(input.len()) + 1000];
            let before = allocations();
            // 0, 1, odd, 20 ms and larger than the internal block.
            for size in [0, 1, 3, 441, 480, 960, 20_000] {
                r.process_into(&input[..size], &mut out).unwrap();
            }
            r.flush_into(&mut out).unwrap();
            r.process_into(&input[..777], &mut out).unwrap();
            r.reset();
            let _ = (r.output_len(480), r.flush_len(), r.delay());
            assert_eq!(allocations() - before, 0, "{i}->{o}");
        }
    }
}
