//! The plugin's main loop: bus messages in (handled in arrival order), board transitions (the
//! board handed to the actuation engine), the engine's picture into the model, its notices
//! and samples onto the bus, the bus-loss policy, and the safe shutdown. The retained state
//! tells the truth at every end: a clean exit publishes "no board, nothing on, offline", and
//! wills (one per energy-related topic, see [`GUARDED_STATES`]) say the same after a crash.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use firmware_protocol::events::{EVENT_CHANNELS_UPDATED, EVENT_ENABLE};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use super::context::{Behaviour, Ctx};
use super::model::{offline_status, Model};
use super::routes::{self, Route};
use super::{calibration, electrodes, recording, requests, telemetry, PluginError};
use crate::actuation::{Actuator, DropBotBoard, EngineOptions, Halt, Ordered, SequenceState};
use crate::board::{BoardStatus, BoardSupervisor, SupervisorHandle, SupervisorOptions};
use crate::bus::{BusClient, BusMessage, BusOptions, ConnectionState, Farewell, Topic, Will};

/// Gated events the plugin wants: shorts and drops (channel updates are read back instead).
pub(super) const EVENT_MASK: u32 = !EVENT_CHANNELS_UPDATED | EVENT_ENABLE;

/// Retained state topics that can say something is energised (HV on, channels actuated, a
/// sequence running). Each gets a will of its own (the bus layer's guards) saying what a
/// clean exit leaves there, so that no ending, a crash included, leaves them saying so.
pub const GUARDED_STATES: [&str; 5] = [
    "hv-output-enabled",
    "actuated-channels",
    "channels",
    "info",
    "sequence",
];

/// The model as a clean exit leaves it: no board, nothing running.
fn stopped(model: &mut Model) {
    model.on_status(&BoardStatus::Stopped, None);
    model.sequence = SequenceState::Idle;
}

/// The wills: `status` offline on the main connection, and the [`GUARDED_STATES`] as a clean
/// exit leaves them, each on a connection of its own.
fn wills(name: &str) -> Result<(Will, Vec<Will>), PluginError> {
    let mut model = Model::new(name);
    stopped(&mut model);
    let states = model.states();
    let guards = GUARDED_STATES
        .iter()
        .map(|property| {
            Ok(Will {
                topic: Topic::state(name, property)?.to_string(),
                value: states
                    .get(property)
                    .map_or(Value::Null, |v| Value::clone(v)),
            })
        })
        .collect::<Result<Vec<_>, PluginError>>()?;
    let status = Will {
        topic: Topic::state(name, "status")?.to_string(),
        value: offline_status(),
    };
    Ok((status, guards))
}

/// Run the plugin until `shutdown` resolves, the `exit` trigger, or the bus client ends.
/// On the way out: all channels off, HV off, the board's failsafe handed back, retained state
/// saying nothing is on, status offline.
pub async fn run(
    mut bus_options: BusOptions,
    mut supervisor: SupervisorOptions,
    behaviour: Behaviour,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PluginError> {
    let name = bus_options.name.clone();
    let (status_will, guards) = wills(&name)?;
    let status_topic = status_will.topic.clone();
    bus_options.will = Some(status_will);
    bus_options.guards = guards;
    let mut client = BusClient::start(bus_options)?;
    let bus = client.handle();
    // The engine owns the board's command stream, keep-alive included.
    supervisor.heartbeat = None;
    let supervisor = BoardSupervisor::spawn(supervisor);
    let (actuator, mut streams) = Actuator::spawn(EngineOptions {
        auto_hv: behaviour.auto_hv,
        failsafe: behaviour.failsafe,
        keepalive: behaviour.failsafe.map_or(Duration::from_secs(1), |t| {
            (t / 3).min(Duration::from_secs(1))
        }),
        ..EngineOptions::default()
    })?;
    let router = routes::router(&name)?;
    let (exit_tx, mut exit_rx) = mpsc::channel(1);
    let ctx = Ctx::new(bus.clone(), actuator, router, behaviour, exit_tx);
    // Samples go their own way (batches, rate limits, records), off the main loop.
    telemetry::stream::spawn(ctx.telemetry.clone(), streams.samples);
    let mut monitor = tokio::time::interval(
        ctx.behaviour
            .readings
            .monitor_interval
            .unwrap_or(Duration::from_secs(3600)),
    );
    monitor.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let monitoring = ctx.behaviour.readings.monitor_interval.is_some();
    bus.subscribe_router(&ctx.router)?;
    ctx.update(|_| ());
    tracing::info!(%name, "plugin running");

    let mut transitions = supervisor.transitions();
    let mut picture = ctx.actuator.picture();
    let mut connection = bus.connection();
    let mut bus_lost_since: Option<tokio::time::Instant> = None;
    let mut next_connection = 0u64;
    // A message that waits for a device parse.
    let mut held: Option<BusMessage> = None;
    on_status(
        &ctx,
        &supervisor,
        supervisor.status().borrow().clone(),
        &mut next_connection,
    );
    let supervisor_gone = supervisor.gone();
    tokio::pin!(shutdown, supervisor_gone);
    let outcome = loop {
        let bus_deadline = bus_lost_since.map(|t| t + ctx.behaviour.safe_after_bus_loss);
        let protocol_deadline = recording::protocol_deadline(&ctx).map(Into::into);
        calibration::follow(&ctx);
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            // It ends by itself only when it died: nothing watches the board any more.
            () = &mut supervisor_gone => break Err(PluginError::SupervisorGone),
            _ = exit_rx.recv() => break Ok(()),
            // While a device is parsed, a newer device replaces the one waiting, and the first
            // other message waits, with everything after it (see `devices`).
            msg = client.recv(), if held.is_none() => match msg {
                Some(msg) if ctx.devices.is_idle() || is_device(&ctx, &msg) => dispatch(&ctx, msg),
                Some(msg) => held = Some(msg),
                None => break Ok(()),
            },
            () = ctx.devices.idle(), if held.is_some() => {
                if let Some(msg) = held.take() {
                    dispatch(&ctx, msg);
                }
            }
            t = transitions.recv() => match t {
                Ok(status) => on_status(&ctx, &supervisor, status, &mut next_connection),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(lost = n, "board transitions lagged; taking the latest");
                    let status = supervisor.status().borrow().clone();
                    on_status(&ctx, &supervisor, status, &mut next_connection);
                }
                Err(broadcast::error::RecvError::Closed) => {
                    break Err(PluginError::SupervisorGone);
                }
            },
            Ok(()) = picture.changed() => {
                let p = picture.borrow_and_update().clone();
                ctx.take_picture(&p);
            }
            Some(notice) = streams.notices.recv() => telemetry::on_notice(&ctx, notice),
            _ = monitor.tick(), if monitoring => telemetry::monitor::tick(&ctx),
            () = sleep_until(protocol_deadline) => recording::protocol_expired(&ctx),
            Ok(()) = connection.changed() => {
                let up = matches!(*connection.borrow_and_update(), ConnectionState::Connected { .. });
                bus_lost_since = match (up, bus_lost_since) {
                    (true, _) => None,
                    (false, None) => Some(tokio::time::Instant::now()),
                    (false, since) => since,
                };
            }
            () = sleep_until(bus_deadline) => {
                bus_lost_since = None;
                on_bus_lost(&ctx);
            }
        }
    };
    tracing::info!("shutting down: channels off, HV off");
    // Also with requests still running (a sequence, a step's hold): the engine ends them, so
    // their askers get an answer before we leave rather than wait for ever.
    let safe_engine = ctx.actuator.shutdown().await.map(|_| ());
    if let Err(e) = &safe_engine {
        tracing::warn!(error = %e, "the engine could not confirm the safe state; the supervisor tries again");
    }
    let safe = supervisor.shutdown().await;
    if let Err(e) = &safe {
        tracing::error!(error = %e, "could not confirm the safe state");
    }
    // No retained state may say HV is on or channels are actuated once we are gone: the same
    // values as our wills.
    ctx.update(stopped);
    ctx.telemetry.leaving();
    let farewell = [Farewell {
        topic: status_topic,
        value: offline_status(),
        retain: true,
    }];
    if let Err(e) = client.disconnect(&farewell, Duration::from_secs(2)).await {
        tracing::warn!(error = %e, "broker did not take our goodbye (the will says offline)");
    }
    outcome?;
    safe.map_err(PluginError::from)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn is_device(ctx: &Ctx, msg: &BusMessage) -> bool {
    matches!(ctx.router.route(&msg.topic), Some((Route::Device, _)))
}

fn dispatch(ctx: &Arc<Ctx>, msg: BusMessage) {
    route(ctx, msg);
    // A message that started nothing (a stored update, one that changed nothing) is done.
    ctx.settle_if_idle();
}

fn route(ctx: &Arc<Ctx>, msg: BusMessage) {
    let Some((&route, _)) = ctx.router.route(&msg.topic) else {
        tracing::debug!(topic = %msg.topic, "no route");
        return;
    };
    match route {
        Route::Device => electrodes::on_device(ctx, &msg),
        Route::ActiveElectrodes => electrodes::on_active_electrodes(ctx, &msg),
        Route::StepSetting(p) => electrodes::on_step_setting(ctx, &msg, p),
        Route::OwnState(p) => electrodes::on_own_state(ctx, &msg, p),
        Route::StepDuration => electrodes::on_step_duration(ctx, &msg),
        Route::RoutesStop if !msg.stored => {
            // MicroDrop's Stop button: our sequence (or a step's hold) stops with its routes.
            let _ = ctx.actuator.stop();
        }
        Route::RoutesStop => {}
        Route::Put(_) | Route::Trigger(_) => requests::handle(ctx, route, msg),
    }
}

fn on_status(
    ctx: &Arc<Ctx>,
    supervisor: &SupervisorHandle,
    status: BoardStatus,
    next_connection: &mut u64,
) {
    let old = ctx.model().connection();
    if let Some(old) = old {
        // Whatever was pending belonged to the previous board.
        ctx.actuator.detach(old);
    }
    let was_connected = ctx.model().board().is_some();
    let board = match &status {
        BoardStatus::Connected(_) => supervisor.board(),
        _ => None,
    };
    let connection = board.as_ref().map(|_| {
        *next_connection += 1;
        *next_connection
    });
    // The model starts from the safe state before the engine may touch the new board.
    ctx.update(|m| m.on_status(&status, connection));
    match (board, connection) {
        (Some(board), Some(id)) => {
            tracing::info!(uuid = %board.info().uuid, firmware = %board.info().identity, "board connected");
            let _ = ctx.bus.signal("board-connected", &ctx.model().status());
            ctx.telemetry.board_attached();
            let driver = DropBotBoard::new(board, tokio::runtime::Handle::current(), EVENT_MASK);
            ctx.actuator.attach(Box::new(driver), id);
            reapply_settings(ctx);
        }
        _ if was_connected => {
            tracing::warn!(?status, "board lost");
            ctx.telemetry.clear_readings();
            let _ = ctx.bus.signal(
                "board-disconnected",
                &json!({"reason": ctx.model().status().get("detail")}),
            );
        }
        _ => {}
    }
}

/// After a (re)connection: the voltage and frequency MicroDrop asked for. HV and channels
/// stay off.
fn reapply_settings(ctx: &Arc<Ctx>) {
    let (voltage, frequency) = {
        let m = ctx.model();
        (m.voltage_setting, m.frequency_setting)
    };
    if voltage.is_none() && frequency.is_none() {
        return;
    }
    let pending = ctx
        .actuator
        .submit(Ordered::Waveform { voltage, frequency });
    let ctx = ctx.clone();
    tokio::spawn(async move {
        if let Err(e) = ctx.answer(pending, Some(ctx.behaviour.apply_timeout)).await {
            ctx.report_error("voltage", &e);
        }
    });
}

/// The broker has been gone for the configured time: nobody can switch the board off from
/// the bus, so it goes safe and stays halted until a user resumes.
fn on_bus_lost(ctx: &Arc<Ctx>) {
    let after = ctx.behaviour.safe_after_bus_loss;
    tracing::warn!(
        ?after,
        "the broker is gone: HV and channels off, halted until resumed"
    );
    let halt = Halt::new(
        "bus-lost",
        json!(format!("the MQTT broker was unreachable for {after:?}")),
    );
    let pending = ctx.actuator.halt(halt);
    let ctx = ctx.clone();
    tokio::spawn(async move {
        if let Err(e) = ctx.answer(pending, None).await {
            tracing::warn!(error = %e, "could not confirm the safe state after losing the bus");
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use firmware_protocol::TableSet;

    use super::*;
    use crate::board::{DiscoveryError, PortInfo, PortLister, Probe, Selector};

    /// A port lister that panics, as a bug deep in discovery would.
    struct Panics;

    impl PortLister for Panics {
        fn list(&self) -> Result<Vec<PortInfo>, DiscoveryError> {
            panic!("a bug in port listing");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_plugin_ends_with_an_error_when_its_supervisor_dies() {
        let probe = Probe::new(Arc::new(TableSet::builtin()));
        let supervisor = SupervisorOptions::new(Selector::default(), Arc::new(Panics), probe);
        // No broker: the bus keeps trying in the background, which does not matter here.
        let bus = BusOptions::new("dropbot", "127.0.0.1", 1);
        let never = std::future::pending::<()>();
        let run = run(bus, supervisor, Behaviour::default(), never);
        let outcome = tokio::time::timeout(Duration::from_secs(30), run).await;
        assert!(
            matches!(outcome, Ok(Err(PluginError::SupervisorGone))),
            "{outcome:?}"
        );
    }
}
