//! A live view of the chip in the browser: one page that draws the device, the actuated
//! electrodes, the simulator's droplets, HV, voltage, connection and halt state, and a
//! scrolling capacitance trace; a click toggles an electrode.
//!
//! The view is an honest client of the plugin. It has its own MQTT connection and learns
//! everything from the bus: MicroDrop's retained `three-object` and `active-electrodes`, the
//! plugin's retained state, errors, signals. A click is published as MicroDrop's electrodes
//! model publishes the result of a `toggle-electrode` (a live `active-electrodes` list), so the
//! plugin applies it, or refuses it, exactly as it would MicroDrop's; this works whether or
//! not MicroDrop runs. Only droplets come from elsewhere: a [`DropletSource`] when the board
//! is simulated in this process.
//!
//! - [`chip`]: the device as the page draws it, and MicroDrop's toggle rule;
//! - [`picture`]: what the bus said, as the page shows it; [`samples`]: the capacitance ring;
//! - [`hub`]: the picture shared with every page, with per-page cursors (no queues);
//! - [`listen`]: the MQTT side; [`http`]: the HTTP side (axum, server-sent events);
//! - [`droplets`]: where droplets come from; [`addr`]: listen address and host guard.

pub mod addr;
pub mod chip;
pub mod droplets;
pub mod http;
#[cfg(test)]
mod http_tests;
pub mod hub;
pub mod listen;
pub mod picture;
pub mod samples;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use addr::{parse_listen, DEFAULT_PORT};
pub use droplets::{DropletMark, DropletSource, SimDroplets};

use crate::bus::{BusClient, BusError, BusOptions};

/// How long each part of the view may take to stop.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Errors of the view.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// The HTTP address cannot be used.
    #[error("the live view cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why not.
        source: std::io::Error,
    },
    /// The view's MQTT connection cannot be set up.
    #[error("the live view's MQTT connection: {0}")]
    Bus(#[from] BusError),
}

/// How the view is set up.
pub struct ViewOptions {
    /// Where to serve the page (loopback unless the user says otherwise).
    pub listen: SocketAddr,
    /// The view's own MQTT connection; its name (e.g. `dropbot-view`) is the view's name on
    /// the bus.
    pub bus: BusOptions,
    /// The bus name of the plugin to watch (e.g. `dropbot`).
    pub plugin: String,
    /// Where droplets are, when the board is simulated in this process.
    pub droplets: Option<Arc<dyn DropletSource>>,
    /// A `three-object` to publish as MicroDrop's device model state when the bus has none
    /// (the simulated chip, so that clicks work without MicroDrop).
    pub stand_in_device: Option<Value>,
    /// Ask the plugin for a capacitance stream of this period (ms) at each board connection,
    /// unless the board already streams at that period.
    pub stream_ms: Option<u32>,
}

/// A running view.
pub struct ViewHandle {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl ViewHandle {
    /// Where the view listens (the port is the real one when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's address, for people.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Closes the pages' streams, stops serving and disconnects from the broker (each part
    /// gets [`SHUTDOWN_GRACE`], then it is aborted).
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        for mut task in self.tasks {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

/// Starts the view: binds the address (an error here is reported before anything else
/// starts), connects to the broker in the background, serves pages.
pub async fn start(options: ViewOptions) -> Result<ViewHandle, ViewError> {
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(|source| ViewError::Bind {
            addr: options.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ViewError::Bind {
        addr: options.listen,
        source,
    })?;
    let client = BusClient::start(options.bus)?;
    let bus = client.handle();
    let router = listen::router(&options.plugin, bus.name())?;
    bus.subscribe_router(&router)?;
    let hub = Arc::new(hub::Hub::new());
    let (stop, stopped) = watch::channel(false);

    let mut tasks = Vec::new();
    let listener_task = listen::Listener {
        client,
        router,
        hub: hub.clone(),
        plugin: options.plugin,
        stand_in_device: options.stand_in_device,
        stream_ms: options.stream_ms,
    };
    tasks.push(tokio::spawn(listener_task.run(stopped.clone())));
    if let Some(source) = options.droplets {
        tasks.push(tokio::spawn(droplets::follow(
            source,
            hub.clone(),
            stopped.clone(),
        )));
    }
    let app = Arc::new(http::App {
        hub,
        bus,
        listen: addr,
        stop: stopped.clone(),
    });
    let mut until_stop = stopped;
    let serve = axum::serve(listener, http::router(app)).with_graceful_shutdown(async move {
        let _ = until_stop.wait_for(|stop| *stop).await;
    });
    tasks.push(tokio::spawn(async move {
        if let Err(e) = serve.await {
            tracing::warn!(error = %e, "live view: the HTTP server stopped");
        }
    }));
    tracing::info!(url = %format!("http://{addr}/"), "live view");
    Ok(ViewHandle { addr, stop, tasks })
}
