//! Helpers shared by the integration tests: model files from `.venv`, and the shared WAV files.

#![allow(dead_code, reason = "each test crate uses its own subset")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

pub mod ws;

/// `var`, else the file in `site-packages/<dir>` of `.venv` whose name passes
/// `wanted` (the longest name: the versioned library is the real file).
pub fn env_or_venv(var: &str, dir: &str, wanted: impl Fn(&str) -> bool) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        return Some(path.into());
    }
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/lib");
    std::fs::read_dir(lib)
        .ok()?
        .flatten()
        .filter_map(|python| std::fs::read_dir(python.path().join("site-packages").join(dir)).ok())
        .flat_map(|entries| entries.flatten().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&wanted))
        .max_by_key(|p| p.as_os_str().len())
}

/// `libonnxruntime` from `ORT_DYLIB_PATH`, else the onnxruntime wheel in `.venv`.
pub fn onnxruntime_library() -> Option<PathBuf> {
    env_or_venv("ORT_DYLIB_PATH", "onnxruntime/capi", |n| {
        n.starts_with("libonnxruntime.so")
            || n.starts_with("libonnxruntime.")
                && Path::new(n).extension().is_some_and(|e| e == "dylib")
    })
}

/// 16-bit mono WAV data as f32 (only what the shared test files need).
pub fn read_wav(path: &str) -> Option<Vec<f32>> {
    let bytes = std::fs::read(path).ok()?;
    let mut i = 12;
    while i + 8 <= bytes.len() {
        let size = u32::from_le_bytes(bytes[i + 4..i + 8].try_into().ok()?) as usize;
        if &bytes[i..i + 4] == b"data" {
            let data = &bytes[i + 8..(i + 8 + size).min(bytes.len())];
            return Some(
                data.chunks_exact(2)
                    .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
                    .collect(),
            );
        }
        i += 8 + size + (size & 1);
    }
    None
}

/// A file of `../shared/audio` (16 kHz mono PCM16), if it is there.
pub fn shared_audio(name: &str) -> Option<Vec<f32>> {
    read_wav(&format!(
        "{}/../shared/audio/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
}

/// `smart-turn-v3.2-cpu.onnx` from `S2S_TURN_MODEL`, else the `pipecat-ai`
/// package that `.ci/setup` installs into `.venv`.
pub fn smart_turn_model() -> Option<PathBuf> {
    env_or_venv(
        "S2S_TURN_MODEL",
        "pipecat/audio/turn/smart_turn/data",
        |n| n == "smart-turn-v3.2-cpu.onnx",
    )
}

/// A global allocator that counts this thread's allocations; a test binary
/// installs it with `#[global_allocator]`.
pub struct Counting;

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

/// Allocations (and reallocations) this thread has made so far.
pub fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}
