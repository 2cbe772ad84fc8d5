//! ALSA loaded at run time: the wheel does not link `libasound.so.2`.
//!
//! cpal's ALSA host calls `snd_*` functions. Linked the usual way, the
//! extension would need `libasound.so.2` to even import, and a manylinux
//! wheel could only satisfy that by bundling a copy, which breaks ALSA's
//! PulseAudio/PipeWire plugins (they link the system's libasound, so the
//! process would hold two). Instead `.cargo/config.toml` overrides the
//! `alsa-sys` build script so that nothing is linked, and this module
//! defines every `snd_*` function cpal uses as a two-instruction trampoline
//! that jumps through a table filled from the system's library by `dlopen`
//! the first time a device is listed or opened.
//!
//! What a user gets: the package imports and serves on any Linux; the device
//! functions work wherever `libasound2` is installed (every desktop, and any
//! server with it), with the system's plugins; without it they fail with a
//! [`DeviceError::Backend`] that names the package to install.
//!
//! A trampoline does not need the function's signature: it jumps, leaving
//! the arguments, the return address and (for variadic calls) `al` as the
//! caller set them. A slot still empty means a call before [`load`], which
//! the device layer never makes; it aborts with a message instead of jumping
//! to address 0. Drift (a new cpal calling a function not listed here) shows
//! as an undefined `snd_*` symbol in the built library, which CI's wheel
//! check refuses.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::error::{DeviceError, Direction, backend_error};

/// The library's soname (its ABI has been stable since 2002).
const SONAME: &CStr = c"libasound.so.2";

#[link(name = "dl")]
unsafe extern "C" {
    fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlerror() -> *mut c_char;
}

const RTLD_NOW: c_int = 2;

macro_rules! alsa_functions {
    ($($name:ident)*) => {
        /// A slot per function, in table order.
        #[expect(non_camel_case_types, reason = "one variant per C function, named as it")]
        #[derive(Clone, Copy)]
        #[repr(usize)]
        enum Slot { $($name,)* }

        /// The functions' names, NUL-terminated, in table order.
        const NAMES: &[&str] = &[$(concat!(stringify!($name), "\0"),)*];

        $(
            #[unsafe(naked)]
            #[unsafe(no_mangle)]
            unsafe extern "C" fn $name() {
                trampoline!(Slot::$name as usize * size_of::<usize>())
            }
        )*
    };
}

#[cfg(target_arch = "x86_64")]
macro_rules! trampoline {
    ($offset:expr) => {
        // r11 is scratch in the System V ABI and carries no argument.
        std::arch::naked_asm!(
            "mov r11, qword ptr [rip + {table} + {offset}]",
            "test r11, r11",
            "jz {unloaded}",
            "jmp r11",
            table = sym TABLE,
            offset = const $offset,
            unloaded = sym unloaded,
        )
    };
}

#[cfg(target_arch = "aarch64")]
macro_rules! trampoline {
    ($offset:expr) => {
        // x16 is IP0, the intra-procedure-call scratch register.
        std::arch::naked_asm!(
            "adrp x16, {table}",
            "add x16, x16, :lo12:{table}",
            "ldr x16, [x16, #{offset}]",
            "cbnz x16, 1f",
            "b {unloaded}",
            "1:",
            "br x16",
            table = sym TABLE,
            offset = const $offset,
            unloaded = sym unloaded,
        )
    };
}

// Every `snd_*` function the alsa crate (through cpal) calls. Keep sorted.
alsa_functions! {
    snd_card_next snd_config_update snd_config_update_free_global snd_ctl_card_info
    snd_ctl_card_info_free snd_ctl_card_info_get_name snd_ctl_card_info_malloc snd_ctl_close
    snd_ctl_open snd_ctl_pcm_info snd_ctl_pcm_next_device snd_device_name_free_hint
    snd_device_name_get_hint snd_device_name_hint snd_pcm_avail_delay snd_pcm_bytes_to_frames
    snd_pcm_close snd_pcm_format_physical_width snd_pcm_get_params snd_pcm_hw_params
    snd_pcm_hw_params_any snd_pcm_hw_params_can_resume snd_pcm_hw_params_copy
    snd_pcm_hw_params_current snd_pcm_hw_params_free snd_pcm_hw_params_get_buffer_size_max
    snd_pcm_hw_params_get_channels_max snd_pcm_hw_params_get_channels_min
    snd_pcm_hw_params_get_period_size snd_pcm_hw_params_get_period_size_max
    snd_pcm_hw_params_get_period_size_min snd_pcm_hw_params_get_rate_max
    snd_pcm_hw_params_get_rate_min snd_pcm_hw_params_malloc snd_pcm_hw_params_set_access
    snd_pcm_hw_params_set_buffer_size_near snd_pcm_hw_params_set_channels
    snd_pcm_hw_params_set_format snd_pcm_hw_params_set_period_size_near
    snd_pcm_hw_params_set_rate snd_pcm_hw_params_supports_audio_ts_type
    snd_pcm_hw_params_test_channels snd_pcm_hw_params_test_format snd_pcm_hw_params_test_rate
    snd_pcm_info snd_pcm_info_free snd_pcm_info_get_name snd_pcm_info_get_stream
    snd_pcm_info_malloc snd_pcm_info_set_device snd_pcm_info_set_stream
    snd_pcm_info_set_subdevice snd_pcm_open snd_pcm_pause snd_pcm_poll_descriptors
    snd_pcm_poll_descriptors_count snd_pcm_poll_descriptors_revents snd_pcm_prepare
    snd_pcm_readi snd_pcm_resume snd_pcm_start snd_pcm_state snd_pcm_status
    snd_pcm_status_get_audio_htstamp snd_pcm_status_get_htstamp snd_pcm_status_get_state
    snd_pcm_status_get_trigger_htstamp snd_pcm_status_set_audio_htstamp_config
    snd_pcm_status_sizeof snd_pcm_sw_params snd_pcm_sw_params_current snd_pcm_sw_params_free
    snd_pcm_sw_params_malloc snd_pcm_sw_params_set_avail_min
    snd_pcm_sw_params_set_start_threshold snd_pcm_sw_params_set_tstamp_mode
    snd_pcm_sw_params_set_tstamp_type snd_pcm_writei
}

/// The real functions' addresses, by [`Slot`]; 0 until [`load`] succeeds.
static TABLE: [AtomicUsize; NAMES.len()] = [const { AtomicUsize::new(0) }; NAMES.len()];

/// Where a trampoline goes while its slot is empty: a bug (a device call
/// that did not go through [`load`]), so stop with a message rather than
/// jump to address 0.
extern "C" fn unloaded() -> ! {
    eprintln!("speech-to-speech: an ALSA function was called before libasound was loaded (a bug)");
    std::process::abort()
}

fn dl_error() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated string that stays
    // valid until the next dl* call on this thread; it is copied at once.
    unsafe {
        let e = dlerror();
        if e.is_null() {
            "unknown error".to_owned()
        } else {
            CStr::from_ptr(e).to_string_lossy().into_owned()
        }
    }
}

fn open_library() -> Result<(), String> {
    // SAFETY: a valid NUL-terminated name; the handle is never closed, so
    // the addresses taken from it stay valid for the life of the process.
    let handle = unsafe { dlopen(SONAME.as_ptr(), RTLD_NOW) };
    if handle.is_null() {
        return Err(dl_error());
    }
    let mut found = Vec::with_capacity(NAMES.len());
    for name in NAMES {
        // SAFETY: `handle` is open and `name` is NUL-terminated (NAMES).
        let address = unsafe { dlsym(handle, name.as_ptr().cast()) };
        if address.is_null() {
            return Err(format!(
                "{SONAME:?} has no {}: {}",
                name.trim_end_matches('\0'),
                dl_error()
            ));
        }
        found.push(address as usize);
    }
    for (slot, address) in TABLE.iter().zip(found) {
        slot.store(address, Ordering::Release);
    }
    Ok(())
}

/// Load the system's ALSA library once; every device entry point calls this
/// before cpal touches ALSA.
pub(super) fn load() -> Result<(), DeviceError> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED.get_or_init(open_library).clone().map_err(|e| {
        backend_error(
            Direction::Output,
            "*",
            format!(
                "audio devices need the system's ALSA library, which could not be loaded \
                 ({e}); install it (Debian/Ubuntu: apt-get install libasound2, \
                 Fedora/RHEL: dnf install alsa-lib) and, for PulseAudio or PipeWire, \
                 their ALSA plugins (libasound2-plugins)"
            ),
        )
    })
}

/// Whether slot `index` was filled (for the tests).
#[cfg(test)]
fn filled(index: usize) -> bool {
    TABLE[index].load(Ordering::Acquire) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_terminated() {
        let mut sorted: Vec<&str> = NAMES.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), NAMES.len());
        assert!(
            NAMES
                .iter()
                .all(|n| n.ends_with('\0') && n.starts_with("snd_"))
        );
        assert_eq!(Slot::snd_pcm_writei as usize, NAMES.len() - 1);
    }

    #[test]
    fn loads_the_system_library_and_calls_through() {
        // A real call through a trampoline: the size of a status struct is
        // a positive constant of the library.
        unsafe extern "C" {
            #[link_name = "snd_pcm_status_sizeof"]
            fn status_sizeof() -> usize;
        }
        // The test machines install libasound2 (the device tests need it).
        load().expect("libasound.so.2 loads");
        assert!((0..NAMES.len()).all(filled));
        // SAFETY: the library is loaded, and the function takes no argument.
        let size = unsafe { status_sizeof() };
        assert!(size > 0 && size < 4096, "snd_pcm_status_sizeof() = {size}");
    }
}
