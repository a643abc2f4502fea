//! What a process's memory is, read in one place: the resident set from `/proc`
//! (Linux) and the heap from the allocator (glibc's `mallinfo2`). Back-pressure samples
//! it, `/metrics` shows it and `tasker bench` reports its peaks. Elsewhere every reading
//! is `None`.

/// The resident set size of this process (`VmRSS` of `/proc/self/status`).
pub fn resident_bytes() -> Option<u64> {
    status_kib("self", "VmRSS:").map(|kib| kib * 1024)
}

/// The peak resident set size of process `pid` (`VmHWM`), in KiB.
pub fn peak_resident_kib(pid: u32) -> Option<u64> {
    status_kib(&pid.to_string(), "VmHWM:")
}

/// A `kB` line of `/proc/<pid>/status`.
fn status_kib(pid: &str, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// What the allocator holds.
pub struct HeapStats {
    pub allocated: usize,
    pub free: usize,
    pub mapped: usize,
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn heap_stats() -> Option<HeapStats> {
    /// glibc's `struct mallinfo2` (glibc ≥ 2.33), every field a `size_t`.
    #[repr(C)]
    struct MallInfo2 {
        arena: usize,
        ordblks: usize,
        smblks: usize,
        hblks: usize,
        hblkhd: usize,
        usmblks: usize,
        fsmblks: usize,
        uordblks: usize,
        fordblks: usize,
        keepcost: usize,
    }
    unsafe extern "C" {
        fn mallinfo2() -> MallInfo2;
    }
    // SAFETY: mallinfo2 takes no arguments and returns a plain struct by value.
    let info = unsafe { mallinfo2() };
    Some(HeapStats {
        allocated: info.uordblks + info.hblkhd,
        free: info.fordblks,
        mapped: info.hblkhd,
    })
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn heap_stats() -> Option<HeapStats> {
    None
}

/// Returns the allocator's free memory to the system (glibc's `malloc_trim`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn release_free_memory() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: malloc_trim takes a byte count and only releases free heap pages.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn release_free_memory() {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let resident = resident_bytes().expect("VmRSS");
        let peak = peak_resident_kib(std::process::id()).expect("VmHWM") * 1024;
        assert!(resident > 1 << 20, "{resident}");
        assert!(peak >= resident, "{peak} < {resident}");
        assert!(peak_resident_kib(u32::MAX).is_none(), "no such process");
    }
}
