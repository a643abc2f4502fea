//! Heap statistics from the allocator, where it provides them: glibc's `mallinfo2`.

/// What the allocator holds.
pub struct HeapStats {
    pub allocated: usize,
    pub free: usize,
    pub mapped: usize,
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn stats() -> Option<HeapStats> {
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
pub fn stats() -> Option<HeapStats> {
    None
}
