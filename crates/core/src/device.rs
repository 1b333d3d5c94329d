//! Compute device selection. `--as-needed` linking can drop libtorch_cuda, so it is loaded
//! explicitly (dlopen, RTLD_NOW | RTLD_GLOBAL) before any torch call: the same binary then
//! uses a GPU where one exists and runs on CPU elsewhere.

use anyhow::{bail, Result};
use tch::{Cuda, Device};

/// Which device the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda,
}

/// Loads libtorch's CUDA library if it is installed; harmless on CPU-only machines.
pub fn load_cuda_library() {
    for name in [c"libtorch_cuda.so"] {
        // SAFETY: dlopen with a valid C string; the handle is intentionally kept open.
        unsafe {
            libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
        }
    }
}

/// Resolves the choice to a device; `cuda` without a usable GPU is an error.
pub fn resolve(choice: DeviceChoice) -> Result<Device> {
    load_cuda_library();
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => Ok(if Cuda::is_available() { Device::Cuda(0) } else { Device::Cpu }),
        DeviceChoice::Cuda => {
            if Cuda::is_available() {
                Ok(Device::Cuda(0))
            } else {
                bail!("--device cuda: no CUDA device is available to libtorch (use --device auto or cpu)")
            }
        }
    }
}
