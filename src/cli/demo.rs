//! `demo`: everything on this machine: an embedded broker on MicroDrop's ports, a simulated
//! board with MicroDrop's default chip and a droplet, the plugin and the live view.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use dropbot_plugin::board::Selector;
use dropbot_plugin::broker::{BrokerOptions, EmbeddedBroker};
use dropbot_plugin::bus::BusOptions;
use dropbot_plugin::config::{self, Settings, Sources};
use dropbot_plugin::plugin;
use dropbot_plugin::sim::Timing;
use dropbot_plugin::view;

use super::common::{
    load_device, port_of, shutdown_signal, start_simulator, start_view, supervisor_options,
};
use super::settings::DataArgs;

/// Arguments of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Use this broker instead of starting one (HOST:PORT).
    #[arg(long, value_name = "HOST:PORT")]
    broker: Option<String>,
    /// MQTT TCP port of the embedded broker.
    #[arg(long, default_value_t = 1884)]
    mqtt_port: u16,
    /// MQTT websocket port of the embedded broker (MicroDrop's UI in a browser).
    #[arg(long, default_value_t = 8083)]
    ws_port: u16,
    /// Listen on every interface instead of loopback only (the broker and the live view).
    #[arg(long)]
    listen_all: bool,
    /// Our name on the bus.
    #[arg(long, default_value = "dropbot")]
    name: String,
    /// The simulated chip (`three-object` JSON) [default: MicroDrop 3's default device].
    #[arg(long, value_name = "FILE")]
    device: Option<PathBuf>,
    /// Run for this many seconds, then shut down (0: until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
    /// The electrode the droplet starts on [default: electrode030 on the default chip; none
    /// on a chip given with --device].
    #[arg(long, value_name = "ID")]
    droplet: Option<String>,
    /// Write the simulated board's trace (JSON lines: packets, channels, HV, droplets) to FILE.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Serve the live view of the chip at PORT or IP:PORT (0: any free port) [default: 8088,
    /// on loopback, or on every interface with --listen-all].
    #[arg(long, value_name = "ADDR", value_parser = view::parse_listen, conflicts_with = "no_view")]
    view: Option<SocketAddr>,
    /// Do not serve the live view.
    #[arg(long)]
    no_view: bool,
}

/// Runs the demo until Ctrl-C (or `--seconds`).
pub async fn demo(args: DemoArgs) -> Result<()> {
    let signal = shutdown_signal()?;
    // Only where files go comes from flags; no configuration file or environment.
    let sources = Sources {
        file: None,
        flags: args.data.flags(),
        no_env: true,
    };
    let behaviour = Settings::from_loaded(&config::load(&sources)?)?.behaviour;
    let (bus_addr, _broker) = match &args.broker {
        Some(addr) => (addr.clone(), None),
        None => {
            let mut options = BrokerOptions::microdrop(args.listen_all);
            options.tcp.set_port(args.mqtt_port);
            if let Some(ws) = options.websocket.as_mut() {
                ws.set_port(args.ws_port);
            }
            let broker =
                tokio::task::spawn_blocking(move || EmbeddedBroker::start(options)).await??;
            let addr = broker.tcp_addr();
            (format!("127.0.0.1:{}", addr.port()), Some(broker))
        }
    };
    let droplets = match (&args.droplet, &args.device) {
        (Some(id), _) => vec![id.clone()],
        (None, None) => vec![DEMO_DROPLET.to_owned()],
        (None, Some(_)) => Vec::new(),
    };
    let device = load_device(args.device.as_ref())?;
    let sim = start_simulator(device, Timing::Realistic, &droplets, args.trace.as_ref()).await?;
    let bus = demo_bus(&bus_addr, &args.name)?;
    let ip = match args.listen_all {
        true => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        false => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    // The default address is best effort (the demo goes on without a view when it is taken);
    // an address the user gave must work.
    let (view, view_off) = match (args.no_view, args.view) {
        (true, _) => (None, None),
        (false, Some(listen)) => (
            Some(start_view(listen, &bus, Some(&sim), Some(DEMO_STREAM_MS)).await?),
            None,
        ),
        (false, None) => {
            let listen = SocketAddr::new(ip, view::DEFAULT_PORT);
            match start_view(listen, &bus, Some(&sim), Some(DEMO_STREAM_MS)).await {
                Ok(view) => (Some(view), None),
                Err(e) => (None, Some(format!("{e:#}"))),
            }
        }
    };
    let sim = sim.handle;
    println!("dropbot-plugin demo");
    println!("  MQTT broker:     {bus_addr} (TCP)");
    if _broker.is_some() {
        println!(
            "  MQTT websockets: ws://127.0.0.1:{}  (MicroDrop 3's UI)",
            args.ws_port
        );
    }
    println!("  simulated board: {}", sim.path().display());
    if let Some(view) = &view {
        println!("  live view:       {}  (open it in a browser)", view.url());
    }
    if let Some(why) = view_off {
        println!("  live view:       off: {why}");
    }
    for d in &droplets {
        println!("  a droplet sits on {d}: actuate its neighbours to move it");
    }
    println!(
        "  try: mosquitto_sub -p {} -t 'microdrop/{}/#' -v",
        port_of(&bus_addr),
        args.name
    );
    println!("  Ctrl-C stops: HV off, channels off, status offline");
    let supervisor = supervisor_options(&[], Selector::Path(sim.path().display().to_string()))?;
    let seconds = args.seconds;
    let stop = async move {
        if seconds == 0 {
            signal.await;
        } else {
            tokio::select! {
                () = signal => {}
                () = tokio::time::sleep(std::time::Duration::from_secs(seconds)) => {}
            }
        }
    };
    let outcome = plugin::run(bus, supervisor, behaviour, stop).await;
    if let Some(view) = view {
        view.shutdown().await;
    }
    sim.shutdown().await;
    outcome?;
    Ok(())
}

/// The demo's bus: the broker at `HOST:PORT`, everything else the defaults.
fn demo_bus(addr: &str, name: &str) -> Result<BusOptions> {
    let (host, port) = addr
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .ok_or_else(|| anyhow::anyhow!("--broker {addr}: expected HOST:PORT"))?;
    let options = BusOptions::new(name, host, port);
    options.validate()?;
    Ok(options)
}

/// Where the demo's droplet starts on MicroDrop 3's default chip (a route's usual start).
const DEMO_DROPLET: &str = "electrode030";

/// The demo view asks for a capacitance reading every 100 ms, so the trace scrolls.
const DEMO_STREAM_MS: u32 = 100;
