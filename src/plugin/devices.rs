//! MicroDrop's device model, parsed off the main loop.
//!
//! A device is anyone's retained message, and finding each electrode's neighbours takes time
//! that grows with the square of the electrodes that overlap (measured, release build: 1,000
//! electrodes stacked on one spot 0.19 s, 2,000 0.37 s, 4,000 1.6 s; MicroDrop's default chip
//! of 92 electrodes well under a millisecond). So the main loop only checks the size (the bus
//! layer's payload limit) and the electrode count ([`MAX_ELECTRODES`]) and hands the rest to
//! one worker on tokio's blocking pool: one parse at a time, the newest device wins, and a
//! parse that a newer device (or a cleared one) overtook is thrown away. Meanwhile the main
//! loop takes newer devices only: the first other bus message waits for the parse (see
//! [`DeviceLoader::idle`]), so electrodes that follow a device load are mapped with that
//! device, as MicroDrop sends them, and a burst of devices costs one parse, not one each;
//! board transitions, the engine's reports, shutdown and the rest of the runtime go on.

use std::sync::{Arc, Mutex, MutexGuard, Weak};

use serde_json::Value;
use tokio::sync::watch;

use super::context::Ctx;
use super::properties::InputError;
use crate::device::Device;

/// Most electrodes taken in a device: far above any DropBot chip (120 channels), and small
/// enough that the worst case parses in well under a second.
pub const MAX_ELECTRODES: usize = 2048;

/// The error topic of device problems.
const TOPIC: &str = "three-object";

/// The newest device waiting to be parsed, and whether the worker runs.
pub struct DeviceLoader {
    state: Mutex<State>,
    /// True while a device waits or is being parsed.
    busy: watch::Sender<bool>,
}

impl Default for DeviceLoader {
    fn default() -> Self {
        DeviceLoader {
            state: Mutex::default(),
            busy: watch::Sender::new(false),
        }
    }
}

#[derive(Default)]
struct State {
    /// Bumped by every device message: a parse of an older one is thrown away.
    generation: u64,
    next: Option<Job>,
    running: bool,
}

struct Job {
    generation: u64,
    value: Value,
    stored: bool,
}

impl DeviceLoader {
    fn state(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// Whether no device waits to be parsed.
    pub fn is_idle(&self) -> bool {
        !*self.busy.borrow()
    }

    /// Resolves once no device waits to be parsed (at once if none does).
    pub fn idle(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut busy = self.busy.subscribe();
        async move {
            // Fails only when the loader is gone, and then nothing waits either.
            let _ = busy.wait_for(|b| !*b).await;
        }
    }
}

/// A new device (stored or live): checked here, parsed in the background.
pub fn load(ctx: &Arc<Ctx>, value: Value, stored: bool) {
    let count = value.as_array().map_or(0, Vec::len);
    let mut state = ctx.devices.state();
    state.generation += 1;
    if count > MAX_ELECTRODES {
        state.next = None;
        drop(state);
        let error = InputError::new(
            TOPIC,
            format!("the device has {count} electrodes"),
            format!("at most {MAX_ELECTRODES} electrodes"),
        );
        return ctx.report_error(TOPIC, &error);
    }
    state.next = Some(Job {
        generation: state.generation,
        value,
        stored,
    });
    if !state.running {
        state.running = true;
        ctx.devices.busy.send_replace(true);
        tokio::spawn(work(Arc::downgrade(ctx)));
    }
}

/// The device was cleared: nothing to parse any more, and no device.
pub fn clear(ctx: &Arc<Ctx>) {
    let mut state = ctx.devices.state();
    state.generation += 1;
    state.next = None;
    // Under the loader's lock, so that no older parse can install itself after this.
    ctx.update(|m| m.device = None);
}

/// Parses the newest device until none waits. Holds the context only while it installs one,
/// so a shutdown is never kept waiting by a parse.
async fn work(ctx: Weak<Ctx>) {
    loop {
        let job = {
            let Some(strong) = ctx.upgrade() else { return };
            let mut state = strong.devices.state();
            match state.next.take() {
                Some(job) => job,
                None => {
                    state.running = false;
                    strong.devices.busy.send_replace(false);
                    return;
                }
            }
        };
        let (generation, stored) = (job.generation, job.stored);
        let parsed =
            tokio::task::spawn_blocking(move || Device::from_three_object_value(&job.value)).await;
        let Some(ctx) = ctx.upgrade() else { return };
        match parsed {
            Ok(Ok(device)) => install(&ctx, generation, Arc::new(device), stored),
            Ok(Err(e)) => ctx.report_error(TOPIC, &e),
            Err(e) => ctx.report_error(TOPIC, &format!("the device could not be parsed: {e}")),
        }
    }
}

/// Puts a parsed device in the model, unless a newer one came meanwhile.
fn install(ctx: &Arc<Ctx>, generation: u64, device: Arc<Device>, stored: bool) {
    let state = ctx.devices.state();
    if state.generation != generation {
        tracing::debug!("a newer device came while this one was parsed");
        return;
    }
    // A client can publish device models as fast as they parse.
    crate::ratelimit::log_limited!(
        info,
        electrodes = device.len(),
        channels = device.channels().len(),
        "device loaded"
    );
    let remap = ctx.update(|m| {
        m.device = Some(device);
        // A new device may map the active electrodes to other channels: follow it, but only
        // while they are actuated (a device load never switches anything on), only for a
        // live message, and with HV as it is.
        let follow = !stored && !m.actuated.is_empty();
        m.active_electrodes.clone().filter(|_| follow)
    });
    drop(state);
    if let Some(ids) = remap {
        // Not live: HV stays as it is.
        super::electrodes::apply(ctx, &ids, false);
    }
}
