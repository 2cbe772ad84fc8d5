//! The resampler's per-call methods never allocate: counted with a global
//! allocator that tallies this thread's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use speech_to_speech::audio::resample::{Resampler, SUPPORTED_RATES};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is a plain thread-local that allocates nothing itself.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller upholds `alloc`'s contract, passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

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
