//! Running Rust without Ruby's global VM lock, so Ruby threads run handlers while this
//! thread waits on the database or the job queue.
//!
//! `rb_nogvl` with `RB_NOGVL_INTR_FAIL` never raises: a Ruby exception must not unwind
//! (longjmp) through Rust frames, which would skip their destructors. When an interrupt
//! is pending it returns without running the work; the interrupt is then handled
//! through magnus (a `Result`, so every Rust value is dropped) and the work is tried
//! again.

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use magnus::{Error, Ruby};

/// Runs `work` with the GVL released; `Err` if the thread was interrupted before it ran
/// (ctrl-C, `Thread#kill`, `Thread#raise`). `work` must not touch Ruby objects.
pub fn without_gvl<F: FnOnce() -> R, R>(ruby: &Ruby, work: F) -> Result<R, Error> {
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
    loop {
        // SAFETY: the trampoline matches `Call<F, R>`; with RB_NOGVL_INTR_FAIL Ruby
        // neither raises nor checks interrupts around the call. No unblocking function:
        // callers keep each wait short.
        unsafe {
            rb_sys::rb_nogvl(
                Some(trampoline::<F, R>),
                (&mut call as *mut Call<F, R>).cast(),
                None,
                std::ptr::null_mut(),
                rb_sys::RB_NOGVL_INTR_FAIL as i32,
            );
        }
        match call.out.take() {
            Some(Ok(r)) => return Ok(r),
            Some(Err(panic)) => resume_unwind(panic),
            // Interrupted before running: let Ruby handle it (a signal handler runs,
            // or an exception comes back as `Err`), then try again.
            None => ruby.thread_check_ints()?,
        }
    }
}
