//! What several subcommands share: simulated boards, the live view, command tables, the
//! board supervisor's options, and the shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use dropbot_plugin::board::{PortLister, Probe, Selector, SupervisorOptions, SystemPorts};
use dropbot_plugin::bus::BusOptions;
use dropbot_plugin::device::Device;
use dropbot_plugin::sim::{self, SimOptions, Timing};
use dropbot_plugin::view::{self, SimDroplets, ViewError, ViewHandle, ViewOptions};
use firmware_protocol::{CommandTable, TableSet};

/// A simulated board in this process, and the chip it has.
pub struct Simulated {
    pub handle: sim::SimHandle,
    device: serde_json::Value,
    gap_height_mm: f64,
}

pub fn load_device(path: Option<&PathBuf>) -> Result<Device> {
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Ok(Device::from_three_object_json(&text)?)
        }
        None => Ok(Device::microdrop3_default()?),
    }
}

pub async fn start_simulator(
    device: Device,
    timing: Timing,
    droplets: &[String],
    trace: Option<&PathBuf>,
) -> Result<Simulated> {
    let three_object = device.to_three_object_value();
    let options = SimOptions {
        device: Some(device),
        timing,
        trace: trace.cloned(),
        ..SimOptions::default()
    };
    let gap_height_mm = options.physics.gap_height_mm;
    let sim = sim::spawn_pty(options).await?;
    for id in droplets {
        let volume = sim.unit_volume(id.as_str())?;
        sim.add_droplet(id.as_str(), volume)?;
    }
    Ok(Simulated {
        handle: sim,
        device: three_object,
        gap_height_mm,
    })
}

/// The live view, watching the plugin of `bus` with a connection of its own. With a board
/// simulated here it shows its droplets and offers its chip to a bus without a device.
pub async fn start_view(
    listen: SocketAddr,
    bus: &BusOptions,
    sim: Option<&Simulated>,
    stream_ms: Option<u32>,
) -> Result<ViewHandle> {
    let mut own = bus.clone();
    own.name = format!("{}-view", bus.name);
    own.incoming_capacity = 64;
    let options = ViewOptions {
        listen,
        bus: own,
        plugin: bus.name.clone(),
        droplets: sim
            .map(|s| Arc::new(SimDroplets::new(s.handle.clone(), s.gap_height_mm)) as Arc<_>),
        stand_in_device: sim.map(|s| s.device.clone()),
        stream_ms,
    };
    view::start(options).await.map_err(|e| match e {
        e @ ViewError::Bind { .. } => anyhow::anyhow!(
            "{e}; choose another address with --view PORT (0: any free port), or in `demo` \
             turn the view off with --no-view"
        ),
        e => e.into(),
    })
}

/// The built-in command tables and those in `paths` (which take precedence).
pub fn load_tables(paths: &[PathBuf]) -> Result<TableSet> {
    let mut tables = TableSet::builtin();
    for path in paths {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        tables.add(CommandTable::from_toml(&text).with_context(|| path.display().to_string())?);
    }
    Ok(tables)
}

pub fn supervisor_options(tables: &[PathBuf], selector: Selector) -> Result<SupervisorOptions> {
    let tables = load_tables(tables)?;
    let lister: Arc<dyn PortLister> = Arc::new(SystemPorts);
    Ok(SupervisorOptions::new(
        selector,
        lister,
        Probe::new(Arc::new(tables)),
    ))
}

pub fn port_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or("1884", |(_, p)| p)
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed now, not at the first poll, so
/// a signal during start-up also ends in the safe shutdown instead of the default action.
pub fn shutdown_signal() -> Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
