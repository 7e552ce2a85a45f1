//! Scheduling policies for the engine's thread: a real-time (FIFO) priority, and back
//! to the normal policy while it spins past its real-time share.

/// Give the calling thread a real-time FIFO priority (1 to 99); why not, if the OS refuses
/// (it needs CAP_SYS_NICE or an rtprio limit).
#[cfg(unix)]
pub(super) fn set_fifo_priority(priority: u8) -> Result<(), String> {
    use thread_priority::unix::{
        set_thread_priority_and_policy, thread_native_id, RealtimeThreadSchedulePolicy,
        ThreadSchedulePolicy,
    };
    use thread_priority::{ThreadPriority, ThreadPriorityValue};
    let value = ThreadPriorityValue::try_from(priority).map_err(|e| e.to_string())?;
    set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Crossplatform(value),
        ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
    )
    .map_err(|e| format!("{e:?}"))
}

/// Give the calling thread a real-time priority: not supported here.
#[cfg(not(unix))]
pub(super) fn set_fifo_priority(_priority: u8) -> Result<(), String> {
    Err("not supported on this OS".into())
}

/// Put the calling thread back under the normal (fair) scheduling policy, at its nice value.
#[cfg(unix)]
pub(super) fn set_normal_policy() -> Result<(), String> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid, initialised parameter.
    match unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error().to_string()),
    }
}

/// Put the calling thread back under the normal policy: not supported here.
#[cfg(not(unix))]
pub(super) fn set_normal_policy() -> Result<(), String> {
    Err("not supported on this OS".into())
}
