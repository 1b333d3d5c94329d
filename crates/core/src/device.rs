//! Compute device selection. The binaries link only libtorch's CPU part; its CUDA part is
//! loaded explicitly (dlopen, RTLD_NOW | RTLD_GLOBAL) before any CUDA call, and only where an
//! NVIDIA driver is installed and the device is not `cpu`: the same binary then uses a GPU
//! where one exists, and a CPU-only machine does not pay libtorch_cuda and the CUDA
//! libraries it pulls in at start-up (measured: `predict --help` 0.28 -> 0.17 s and 470 -> 120
//! MB resident).

use anyhow::{bail, Context, Result};
use tch::{Cuda, Device};

/// Which device the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda,
}

/// Loads libtorch's CUDA library where the NVIDIA driver's `libcuda.so.1` loads (bare
/// metal, containers given a GPU, WSL); returns whether it did. Harmless where either is
/// missing: a CPU-only torch wheel, a machine without a driver.
pub fn load_cuda_library() -> bool {
    // SAFETY: dlopen with valid C strings; the handles are intentionally kept open.
    unsafe {
        if libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL).is_null() {
            return false;
        }
        !libc::dlopen(c"libtorch_cuda.so".as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL).is_null()
    }
}

/// Keeps freed tensor memory in the process heap. By default glibc serves large blocks
/// (activations) with mmap and returns them on free, so every batch page-faults its
/// buffers in again: CPU training spent as long in the kernel as computing (measured: 16.7 s
/// -> 6.9 s for the demo's training). One arena for all threads: a thread other than the
/// main one (serve's inference thread) otherwise gets its own arena of 64 MB heaps, which
/// still maps anything larger afresh on every batch (serve at concurrency 32: a quarter of
/// its time in page faults, 81 -> 111 images/s with one arena). The cost is that peak memory
/// is not given back to the OS until exit. Call before other threads start.
pub fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator parameters.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Images per forward pass for inference (predict, evaluate, feature caching) unless the
/// user sets it: 8 on a CPU, where larger batches were no faster (measured on 2 cores for
/// all four backbones) and each doubling added 150-400 MB of peak memory; 32 on a GPU.
pub fn inference_batch(device: Device) -> usize {
    if device.is_cuda() {
        32
    } else {
        8
    }
}

/// The device's name in run records and messages: `cpu`, `cuda:0`.
pub fn name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Prepares the process for libtorch (allocator settings, CUDA library) and resolves the
/// choice to a device; `cuda` without a usable GPU is an error.
pub fn resolve(choice: DeviceChoice) -> Result<Device> {
    keep_freed_memory();
    if choice == DeviceChoice::Cpu {
        return Ok(Device::Cpu);
    }
    let cuda = load_cuda_library() && Cuda::is_available();
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => Ok(if cuda { Device::Cuda(0) } else { Device::Cpu }),
        DeviceChoice::Cuda => {
            if cuda {
                Ok(Device::Cuda(0))
            } else {
                bail!("--device cuda: no CUDA device is available to libtorch (use --device auto or cpu)")
            }
        }
    }
}

/// Runs `f` under CUDA autocast in bfloat16 when `enabled` (convolutions and matrix products
/// in bf16, float32 weights, optimizer and loss). Errors where bf16 autocast is unavailable.
pub fn bf16_autocast<T>(enabled: bool, device: Device, f: impl FnOnce() -> T) -> Result<T> {
    if !enabled {
        return Ok(f());
    }
    if !device.is_cuda() {
        bail!("--bf16 needs a CUDA device (bf16 autocast runs on the GPU only)");
    }
    let api = autocast_api()?;
    // SAFETY: see `AutocastApi`; calls are balanced (enable/nesting restored below).
    unsafe {
        let prev_enabled = (api.is_enabled)(CUDA);
        let prev_dtype = (api.get_dtype)(CUDA);
        (api.set_dtype)(CUDA, BFLOAT16);
        (api.set_enabled)(CUDA, true);
        (api.increment_nesting)();
        let out = f();
        if (api.decrement_nesting)() == 0 {
            (api.clear_cache)();
        }
        (api.set_enabled)(CUDA, prev_enabled);
        (api.set_dtype)(CUDA, prev_dtype);
        Ok(out)
    }
}

const CUDA: i8 = 1; // c10::DeviceType::CUDA
const BFLOAT16: i8 = 15; // c10::ScalarType::BFloat16

/// libtorch's per-device autocast controls. tch 0.24 exposes only the deprecated CUDA-only
/// ones (which log a deprecation warning on every call) and no dtype choice (CUDA defaults to
/// float16), so the functions are looked up in the loaded libtorch by their C++ symbol names.
/// They take and return one-byte enums and bools, passed like `i8`/`bool` by the C ABI.
struct AutocastApi {
    set_enabled: unsafe extern "C" fn(i8, bool),
    is_enabled: unsafe extern "C" fn(i8) -> bool,
    set_dtype: unsafe extern "C" fn(i8, i8),
    get_dtype: unsafe extern "C" fn(i8) -> i8,
    increment_nesting: unsafe extern "C" fn() -> i32,
    decrement_nesting: unsafe extern "C" fn() -> i32,
    clear_cache: unsafe extern "C" fn(),
}

fn autocast_api() -> Result<&'static AutocastApi> {
    /// The function named `name` in the loaded libraries, as `F` (a function pointer type).
    ///
    /// SAFETY: `F` must be the symbol's true signature.
    unsafe fn sym<F: Copy>(name: &std::ffi::CStr) -> Option<F> {
        let p = libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr());
        (!p.is_null()).then(|| std::mem::transmute_copy::<*mut libc::c_void, F>(&p))
    }
    static API: std::sync::OnceLock<Option<AutocastApi>> = std::sync::OnceLock::new();
    API.get_or_init(|| {
        // SAFETY: each type below is the C ABI view of the named function's C++ signature.
        unsafe {
            Some(AutocastApi {
                set_enabled: sym(c"_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb")?,
                is_enabled: sym(c"_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE")?,
                set_dtype: sym(c"_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE")?,
                get_dtype: sym(c"_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE")?,
                increment_nesting: sym(c"_ZN2at8autocast17increment_nestingEv")?,
                decrement_nesting: sym(c"_ZN2at8autocast17decrement_nestingEv")?,
                clear_cache: sym(c"_ZN2at8autocast11clear_cacheEv")?,
            })
        }
    })
    .as_ref()
    .context("this libtorch lacks the at::autocast functions bf16 autocast needs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autocast_functions_are_found_and_cpu_is_refused() {
        assert!(autocast_api().is_ok());
        let err = bf16_autocast(true, Device::Cpu, || ()).unwrap_err();
        assert!(err.to_string().contains("CUDA"), "{err}");
        assert_eq!(bf16_autocast(false, Device::Cpu, || 7).unwrap(), 7);
    }
}
