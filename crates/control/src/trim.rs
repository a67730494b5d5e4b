//! Giving freed memory back to the system after large, short-lived allocations
//! (loading tens of thousands of resources, compiling every group after a change).
//!
//! glibc keeps freed heap pages mapped, so without this the control plane's resident
//! memory stays at its high-water mark. `malloc_trim(0)` releases free pages anywhere
//! in the heap. This is the only `unsafe` in Trellis: one call, no pointers.

/// Releases freed heap memory to the operating system (glibc only; elsewhere a no-op).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: malloc_trim takes no pointers, only walks glibc's own heap under its
    // lock, and is safe to call from any thread at any time.
    unsafe {
        malloc_trim(0);
    }
}

/// Releases freed heap memory to the operating system (glibc only; elsewhere a no-op).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() {}
