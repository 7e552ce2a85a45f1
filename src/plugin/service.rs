//! The plugin's main loop: bus messages in, board transitions, shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use firmware_protocol::events::{EVENT_CHANNELS_UPDATED, EVENT_ENABLE};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::context::{Behaviour, Ctx};
use super::model::offline_status;
use super::routes::{self, Route};
use super::{electrodes, requests, telemetry, PluginError};
use crate::actuation::{ActuationError, Actuator, Target};
use crate::board::{BoardStatus, BoardSupervisor, SupervisorOptions};
use crate::bus::{BusClient, BusMessage, BusOptions, Farewell, Topic, Will};

/// Gated events the plugin wants: shorts and drops (channel updates are read back instead).
const EVENT_MASK: u32 = !EVENT_CHANNELS_UPDATED | EVENT_ENABLE;

/// Run the plugin until `shutdown` resolves, the `exit` trigger, or the bus client ends.
/// On the way out: all channels off, HV off, retained status offline.
pub async fn run(
    mut bus_options: BusOptions,
    supervisor: SupervisorOptions,
    behaviour: Behaviour,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PluginError> {
    let name = bus_options.name.clone();
    let status_topic = Topic::state(&name, "status")?.to_string();
    bus_options.will = Some(Will {
        topic: status_topic.clone(),
        value: offline_status(),
    });
    let mut client = BusClient::start(bus_options)?;
    let bus = client.handle();
    let supervisor = BoardSupervisor::spawn(supervisor);
    let board = supervisor.watch_board();
    let actuator = Actuator::spawn(move || board.borrow().clone());
    let router = routes::router(&name)?;
    let (exit_tx, mut exit_rx) = mpsc::channel(1);
    let ctx = Ctx::new(
        bus.clone(),
        supervisor.watch_board(),
        actuator,
        router,
        behaviour,
        exit_tx,
    );
    bus.subscribe_router(&ctx.router)?;
    ctx.update(|_| ());
    tracing::info!(%name, "plugin running");

    let mut status = supervisor.status();
    let mut applied = ctx.actuator.subscribe();
    let mut events: Option<JoinHandle<()>> = None;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = exit_rx.recv() => break,
            msg = client.recv() => match msg {
                Some(msg) => dispatch(&ctx, msg),
                None => break,
            },
            Ok(()) = status.changed() => {
                let s = status.borrow_and_update().clone();
                on_status(&ctx, s, &mut events);
            }
            Ok(()) = applied.changed() => {
                let a = applied.borrow_and_update().clone();
                // Usually the waiter took it already; this catches outcomes nobody waited for.
                if ctx.model().applied_generation < a.generation {
                    ctx.update(|m| m.on_applied(a.generation, &a.picture));
                }
            }
        }
    }
    tracing::info!("shutting down: channels off, HV off");
    if let Some(task) = events.take() {
        task.abort();
    }
    // Nothing of ours may follow the safe state: the applier stops first.
    ctx.actuator.stop().await;
    let safe = supervisor.shutdown().await;
    if let Err(e) = &safe {
        tracing::error!(error = %e, "could not confirm the safe state");
    }
    let farewell = [Farewell {
        topic: status_topic,
        value: offline_status(),
        retain: true,
    }];
    if let Err(e) = client.disconnect(&farewell, Duration::from_secs(2)).await {
        tracing::warn!(error = %e, "broker did not take our goodbye (the will says offline)");
    }
    safe.map_err(PluginError::from)
}

fn dispatch(ctx: &Arc<Ctx>, msg: BusMessage) {
    let Some((&route, _)) = ctx.router.route(&msg.topic) else {
        tracing::debug!(topic = %msg.topic, "no route");
        return;
    };
    match route {
        Route::Device => electrodes::on_device(ctx, &msg),
        Route::ActiveElectrodes => electrodes::on_active_electrodes(ctx, &msg),
        Route::StepSetting(p) => electrodes::on_step_setting(ctx, &msg, p),
        Route::OwnState(p) => electrodes::on_own_state(ctx, &msg, p),
        Route::Put(_) | Route::Trigger(_) => {
            tokio::spawn(requests::handle(ctx.clone(), route, msg));
        }
    }
}

fn on_status(ctx: &Arc<Ctx>, status: BoardStatus, events: &mut Option<JoinHandle<()>>) {
    if let Some(task) = events.take() {
        task.abort();
    }
    // Whatever was pending belonged to the previous board (or to none).
    ctx.actuator.clear(ActuationError::NoBoard);
    let was_connected = ctx.model().board().is_some();
    ctx.update(|m| m.on_status(&status));
    match (&status, ctx.current_board()) {
        (BoardStatus::Connected(info), Some(board)) => {
            tracing::info!(uuid = %info.uuid, firmware = %info.identity, "board connected");
            let _ = ctx.bus.signal("board-connected", &ctx.model().status());
            *events = Some(telemetry::spawn_board_events(ctx.clone(), &board));
            tokio::spawn(prepare(ctx.clone(), board));
        }
        _ if was_connected => {
            tracing::warn!(?status, "board lost");
            let _ = ctx.bus.signal(
                "board-disconnected",
                &json!({"reason": ctx.model().status()["detail"]}),
            );
        }
        _ => {}
    }
}

/// After a (re)connection: enable the events we use, learn the disabled channels, and apply the
/// voltage and frequency settings MicroDrop asked for. HV and channels stay off.
async fn prepare(ctx: Arc<Ctx>, board: crate::board::DropBot) {
    if let Err(e) = board.set_event_mask(EVENT_MASK).await {
        tracing::warn!(error = %e, "could not set the event mask");
    }
    match board.disabled_channels().await {
        Ok(disabled) => ctx.update(|m| m.disabled = disabled),
        Err(e) => tracing::warn!(error = %e, "could not read the disabled channels"),
    }
    let (voltage, frequency) = {
        let m = ctx.model();
        (m.voltage_setting, m.frequency_setting)
    };
    if voltage.is_some() || frequency.is_some() {
        if let Err(e) = ctx
            .actuate(Target {
                voltage,
                frequency,
                ..Target::default()
            })
            .await
        {
            ctx.report_error("voltage", &e);
        }
    }
}
