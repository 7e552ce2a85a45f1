//! Command line: `run`, `demo`, `simulate`, `ports`. The only place that uses `anyhow`.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use dropbot_plugin::board::discovery::{DROPBOT_PID, DROPBOT_VID};
use dropbot_plugin::board::{
    describe_ports, PortLister, Probe, Selector, SupervisorOptions, SystemPorts,
};
use dropbot_plugin::broker::{BrokerOptions, EmbeddedBroker};
use dropbot_plugin::bus::BusOptions;
use dropbot_plugin::device::Device;
use dropbot_plugin::plugin::{self, Behaviour};
use dropbot_plugin::sim::{self, SimOptions, SimulateArgs, Timing};
use dropbot_plugin::view::{self, SimDroplets, ViewError, ViewHandle, ViewOptions};
use firmware_protocol::{CommandTable, TableSet};

/// MicroDrop 3 process plugin for the DropBot digital-microfluidics control board.
#[derive(Debug, Parser)]
#[command(name = "dropbot-plugin", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr (`RUST_LOG` sets the levels, e.g. `debug`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for journald, log shippers).
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the plugin: connect to MicroDrop's broker and to the board.
    Run(RunArgs),
    /// All on this machine: an embedded broker on MicroDrop's ports, a simulated board, the plugin.
    Demo(DemoArgs),
    /// A simulated DropBot on a pseudo-terminal, linked at a fixed path.
    Simulate(SimulateArgs),
    /// List USB serial ports (DropBots show as 16c0:0483).
    Ports(PortsArgs),
    /// Bring-up report of a board: identity, table, readings, timing (turns nothing on unless
    /// asked with --actuate).
    Check(CheckArgs),
    /// Draw a run record (CSV) as a PNG: capacitance, coverage, voltage, phases.
    Plot(PlotArgs),
}

#[derive(Debug, Args)]
struct PlotArgs {
    /// The run record (a CSV the plugin wrote).
    csv: PathBuf,
    /// The PNG to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Width, pixels.
    #[arg(long, default_value_t = 1200)]
    width: u32,
    /// Height, pixels.
    #[arg(long, default_value_t = 800)]
    height: u32,
}

#[derive(Debug, Args)]
struct DataArgs {
    /// Where calibrations are kept, one file per chip and board [default: the user's data
    /// directory, e.g. ~/.local/share/dropbot-plugin].
    #[arg(long, value_name = "DIR", env = "DROPBOT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Where run records go [default: DATA_DIR/runs].
    #[arg(long, value_name = "DIR")]
    runs_dir: Option<PathBuf>,
    /// Keep no calibration file and no run record.
    #[arg(long, conflicts_with_all = ["data_dir", "runs_dir"])]
    no_data: bool,
}

impl DataArgs {
    /// The readings' options with these directories.
    fn readings(&self) -> plugin::telemetry::ReadingsOptions {
        let data = match (&self.data_dir, self.no_data) {
            (_, true) => None,
            (Some(d), false) => Some(d.clone()),
            (None, false) => default_data_dir(),
        };
        let runs = match (&self.runs_dir, self.no_data) {
            (_, true) => None,
            (Some(r), false) => Some(r.clone()),
            (None, false) => data.as_ref().map(|d| d.join("runs")),
        };
        plugin::telemetry::ReadingsOptions {
            data_dir: data,
            runs_dir: runs,
            ..Default::default()
        }
    }
}

/// `$XDG_DATA_HOME/dropbot-plugin`, or `~/.local/share/dropbot-plugin`.
fn default_data_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(base.join("dropbot-plugin"))
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// Which board (as for `run`) [default: the one DropBot present].
    #[arg(long, value_name = "SELECTOR")]
    port: Option<String>,
    /// Command table of a firmware build (TOML); repeatable.
    #[arg(long, value_name = "FILE")]
    command_table: Vec<PathBuf>,
    /// Drive this channel alone with HV (at the board's voltage setting) for --actuate-ms, then
    /// turn HV and every channel off.
    #[arg(long, value_name = "CHANNEL")]
    actuate: Option<u16>,
    /// How long --actuate keeps the channel on, ms.
    #[arg(long, default_value_t = 500, value_name = "MS")]
    actuate_ms: u64,
    /// Round trips timed per call.
    #[arg(long, default_value_t = 20, value_name = "N")]
    samples: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct PortsArgs {
    /// Also ask every Teensy port (16c0:0483) who it is, with the ID handshake (the USB id is
    /// shared by every Teensy, so only the handshake tells a DropBot), and print its uuid.
    #[arg(long)]
    probe: bool,
    /// Extra probe targets, e.g. a simulator's link path (with --probe).
    #[arg(long, value_name = "PATH", requires = "probe")]
    path: Vec<String>,
}

#[derive(Debug, Args)]
struct BusArgs {
    /// MQTT broker as HOST:PORT (MicroDrop 3's broker listens on 1884).
    #[arg(long, default_value = "127.0.0.1:1884", value_name = "HOST:PORT")]
    broker: String,
    /// Our name on the bus; a second board needs a second name.
    #[arg(long, default_value = "dropbot")]
    name: String,
    /// Broker user name.
    #[arg(long, env = "DROPBOT_MQTT_USERNAME")]
    username: Option<String>,
    /// Broker password (prefer the environment variable).
    #[arg(long, env = "DROPBOT_MQTT_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Trust these PEM certificate authorities and connect with TLS (build with `--features tls`).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Largest MQTT packet either way, bytes (device files of several MiB must fit).
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    max_packet_size: usize,
}

#[derive(Debug, Args)]
struct BoardArgs {
    /// Which board: a device path, VID:PID, VID:PID:SERIAL or uuid:UUID [default: the one
    /// DropBot (16c0:0483) present; several is an error].
    #[arg(long, value_name = "SELECTOR")]
    port: Option<String>,
    /// Command table of a firmware build (TOML, see firmware-protocol/README.md); repeatable.
    #[arg(long, value_name = "FILE")]
    command_table: Vec<PathBuf>,
    /// Do not turn HV on with the first electrode request: only `hv-output-enabled` does.
    #[arg(long)]
    no_auto_hv: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    bus: BusArgs,
    #[command(flatten)]
    board: BoardArgs,
    #[command(flatten)]
    data: DataArgs,
    /// Use a simulated board started in this process instead of hardware.
    #[arg(long, conflicts_with = "port")]
    simulate: bool,
    /// The simulated chip (`three-object` JSON) [default: MicroDrop 3's default device].
    #[arg(long, value_name = "FILE", requires = "simulate")]
    sim_device: Option<PathBuf>,
    /// The simulated board's timing.
    #[arg(long, default_value = "realistic", requires = "simulate")]
    sim_timing: Timing,
    /// Put a droplet on this electrode of the simulated chip (repeatable).
    #[arg(long, value_name = "ID", requires = "simulate")]
    sim_droplet: Vec<String>,
    /// Write the simulated board's trace (JSON lines: packets, channels, HV, droplets) to FILE.
    #[arg(long, value_name = "FILE", requires = "simulate")]
    sim_trace: Option<PathBuf>,
    /// Serve the live view of the chip at PORT or IP:PORT [default when given without a
    /// value: 127.0.0.1:8088; an IP other than loopback lets other machines in].
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "8088",
          value_parser = view::parse_listen)]
    view: Option<SocketAddr>,
}

#[derive(Debug, Args)]
struct DemoArgs {
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

/// Set up `tracing` on stderr.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        .add_directive(
            dropbot_plugin::broker::LOG_FILTER_DIRECTIVE
                .parse()
                .unwrap_or_default(),
        );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Run the chosen subcommand.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => run_plugin(args).await,
        Command::Demo(args) => demo(args).await,
        Command::Simulate(args) => Ok(sim::run_simulate(args).await?),
        Command::Ports(args) => ports(args).await,
        Command::Check(args) => check(args).await,
        Command::Plot(args) => plot(&args),
    }
}

fn plot(args: &PlotArgs) -> Result<()> {
    let rows = dropbot_plugin::runlog::read_rows(&args.csv)?;
    let drawn = dropbot_plugin::plot::render(&rows, &args.out, args.width, args.height)?;
    println!(
        "{}: {} samples, {} phase boundaries{}",
        args.out.display(),
        drawn.rows,
        drawn.boundaries,
        if drawn.coverage { ", coverage" } else { "" }
    );
    Ok(())
}

async fn check(args: CheckArgs) -> Result<()> {
    use dropbot_plugin::board::check::{check, CheckOptions, Item};
    let stop = shutdown_signal()?;
    let selector = match &args.port {
        Some(s) => s.parse()?,
        None => Selector::default(),
    };
    let probe = Probe::new(Arc::new(load_tables(&args.command_table)?));
    let bot = dropbot_plugin::board::discover(&SystemPorts, &selector, &probe).await?;
    let options = CheckOptions {
        samples: args.samples.max(1),
        actuate: args.actuate,
        actuate_for: std::time::Duration::from_millis(args.actuate_ms),
    };
    let report = tokio::select! {
        report = check(&bot, &options) => report,
        () = stop => {
            let off = bot.safe_state().await;
            bot.disconnect().await;
            anyhow::bail!("interrupted; HV and channels off: {}", if off.is_ok() { "yes" } else { "not confirmed" });
        }
    };
    bot.disconnect().await;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    match report.actuation {
        None => Ok(()),
        Some(a) if a.all_off_after != Item::Ok(true) => {
            anyhow::bail!("the board did not confirm HV and channels off after --actuate")
        }
        Some(a) => match a.error {
            Some(e) => anyhow::bail!("--actuate {}: {e}", a.channel),
            None => Ok(()),
        },
    }
}

async fn ports(args: PortsArgs) -> Result<()> {
    let ports = SystemPorts.list()?;
    print!("{}", describe_ports(&ports));
    if !args.probe {
        return Ok(());
    }
    let probe = Probe::new(Arc::new(TableSet::builtin()));
    let teensies = ports
        .iter()
        .filter(|p| (p.vid, p.pid) == (DROPBOT_VID, DROPBOT_PID))
        .map(|p| p.path.clone());
    for path in teensies.chain(args.path) {
        match probe.identify(&path).await {
            Ok(info) => println!(
                "{path}: {} ({} channels, uuid {}; select with `--port {path}` or, over USB, `--port uuid:{}`)",
                info.identity, info.channel_count, info.uuid, info.uuid
            ),
            Err(why) => println!("{path}: not a DropBot we can use: {why}"),
        }
    }
    Ok(())
}

async fn run_plugin(args: RunArgs) -> Result<()> {
    let stop = shutdown_signal()?;
    let bus = bus_options(&args.bus)?;
    let (selector, sim) = if args.simulate {
        let device = load_device(args.sim_device.as_ref())?;
        let sim = start_simulator(
            device,
            args.sim_timing,
            &args.sim_droplet,
            args.sim_trace.as_ref(),
        )
        .await?;
        (
            Selector::Path(sim.handle.path().display().to_string()),
            Some(sim),
        )
    } else {
        let selector = match &args.board.port {
            Some(s) => s.parse()?,
            None => Selector::default(),
        };
        (selector, None)
    };
    let view = match args.view {
        Some(listen) => {
            let view = start_view(listen, &bus, sim.as_ref(), None).await?;
            tracing::info!("live view: {}", view.url());
            Some(view)
        }
        None => None,
    };
    let supervisor = supervisor_options(&args.board, selector)?;
    let behaviour = Behaviour {
        auto_hv: !args.board.no_auto_hv,
        readings: args.data.readings(),
        ..Behaviour::default()
    };
    let outcome = plugin::run(bus, supervisor, behaviour, stop).await;
    if let Some(view) = view {
        view.shutdown().await;
    }
    outcome?;
    Ok(())
}

async fn demo(args: DemoArgs) -> Result<()> {
    let signal = shutdown_signal()?;
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
    let bus_args = BusArgs {
        broker: bus_addr.clone(),
        name: args.name.clone(),
        username: None,
        password: None,
        tls_ca: None,
        max_packet_size: 8 * 1024 * 1024,
    };
    let bus = bus_options(&bus_args)?;
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
    let board_args = BoardArgs {
        port: None,
        command_table: Vec::new(),
        no_auto_hv: false,
    };
    let supervisor = supervisor_options(
        &board_args,
        Selector::Path(sim.path().display().to_string()),
    )?;
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
    let behaviour = Behaviour {
        readings: args.data.readings(),
        ..Behaviour::default()
    };
    let outcome = plugin::run(bus, supervisor, behaviour, stop).await;
    if let Some(view) = view {
        view.shutdown().await;
    }
    sim.shutdown().await;
    outcome?;
    Ok(())
}

/// Where the demo's droplet starts on MicroDrop 3's default chip (a route's usual start).
const DEMO_DROPLET: &str = "electrode030";

/// The demo view asks for a capacitance reading every 100 ms, so the trace scrolls.
const DEMO_STREAM_MS: u32 = 100;

/// A simulated board in this process, and the chip it has.
struct Simulated {
    handle: sim::SimHandle,
    device: serde_json::Value,
    gap_height_mm: f64,
}

fn load_device(path: Option<&PathBuf>) -> Result<Device> {
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Ok(Device::from_three_object_json(&text)?)
        }
        None => Ok(Device::microdrop3_default()?),
    }
}

async fn start_simulator(
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
async fn start_view(
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

fn bus_options(args: &BusArgs) -> Result<BusOptions> {
    let (host, port) = match args.broker.rsplit_once(':') {
        Some((host, port)) => (
            host.to_owned(),
            port.parse()
                .with_context(|| format!("--broker {}: `{port}` is not a port", args.broker))?,
        ),
        None => (args.broker.clone(), 1884),
    };
    let mut options = BusOptions::new(args.name.clone(), host, port);
    options.max_packet_size = args.max_packet_size;
    options.max_payload = args.max_packet_size;
    if let (Some(user), Some(pass)) = (&args.username, &args.password) {
        options.credentials = Some((user.clone(), pass.clone()));
    }
    if let Some(ca) = &args.tls_ca {
        options.transport = tls_transport(ca)?;
    }
    Ok(options)
}

#[cfg(feature = "tls")]
fn tls_transport(ca: &PathBuf) -> Result<dropbot_plugin::bus::BusTransport> {
    let ca_pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
    Ok(dropbot_plugin::bus::BusTransport::Tls { ca_pem })
}

#[cfg(not(feature = "tls"))]
fn tls_transport(_: &PathBuf) -> Result<dropbot_plugin::bus::BusTransport> {
    anyhow::bail!("this build has no TLS: rebuild with `cargo build --release --features tls`")
}

/// The built-in command tables and those in `paths` (which take precedence).
fn load_tables(paths: &[PathBuf]) -> Result<TableSet> {
    let mut tables = TableSet::builtin();
    for path in paths {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        tables.add(CommandTable::from_toml(&text).with_context(|| path.display().to_string())?);
    }
    Ok(tables)
}

fn supervisor_options(args: &BoardArgs, selector: Selector) -> Result<SupervisorOptions> {
    let tables = load_tables(&args.command_table)?;
    let lister: Arc<dyn PortLister> = Arc::new(SystemPorts);
    Ok(SupervisorOptions::new(
        selector,
        lister,
        Probe::new(Arc::new(tables)),
    ))
}

fn port_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or("1884", |(_, p)| p)
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed now, not at the first poll, so
/// a signal during start-up also ends in the safe shutdown instead of the default action.
fn shutdown_signal() -> Result<impl Future<Output = ()>> {
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
