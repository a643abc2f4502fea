//! Running Rust without Ruby's global VM lock, so Ruby threads run handlers while this
//! thread waits on the database or the job queue.

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

/// Runs `work` with the GVL released. `work` must not touch Ruby objects.
pub fn without_gvl<F: FnOnce() -> R, R>(work: F) -> R {
    struct Call<F, R> {
        work: Option<F>,
        out: Option<std::thread::Result<R>>,
    }
    unsafe extern "C" fn trampoline<F: FnOnce() -> R, R>(data: *mut c_void) -> *mut c_void {
        // SAFETY: `data` is the `Call` below, alive for the whole call.
        let call = unsafe { &mut *data.cast::<Call<F, R>>() };
        if let Some(work) = call.work.take() {
            // A panic must not unwind through Ruby's C frames.
            call.out = Some(catch_unwind(AssertUnwindSafe(work)));
        }
        std::ptr::null_mut()
    }
    let mut call = Call {
        work: Some(work),
        out: None,
    };
    // SAFETY: the trampoline matches `Call<F, R>`; no unblocking function is given, so
    // Ruby waits for `work` to return (callers keep each wait short).
    unsafe {
        rb_sys::rb_thread_call_without_gvl(
            Some(trampoline::<F, R>),
            (&mut call as *mut Call<F, R>).cast(),
            None,
            std::ptr::null_mut(),
        );
    }
    match call.out.expect("the call ran") {
        Ok(r) => r,
        Err(panic) => resume_unwind(panic),
    }
}
