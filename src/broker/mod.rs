//! The embedded MQTT broker used by `demo` when no broker is given: rumqttd in-process, on
//! MicroDrop 3's ports (MQTT on TCP 1884, MQTT over websockets on 8083 for its browser UI).
//!
//! The broker runs on its own threads (rumqttd starts one per listener plus a router thread,
//! each with a private single-threaded tokio runtime), so it never competes with the plugin's
//! runtime. rumqttd has no shutdown API: once started, the broker lives until the process
//! exits; dropping [`EmbeddedBroker`] does not stop it.
//!
//! rumqttd logs through `tracing`: about four `info` lines per connection, and an `ERROR`
//! ("router-drop" or "no-connection id N is already gone") for every clean DISCONNECT, which
//! MicroDrop's short-lived helper clients do constantly; hence [`LOG_FILTER_DIRECTIVE`] turns
//! it off (`RUST_LOG=rumqttd=info` to debug the broker).
//!
//! Known rumqttd 0.20 defects and limits (0.20.0 is the latest release), each pinned by an
//! `#[ignore]`d test in `tests/broker_*.rs`:
//! - a subscription with QoS 1 or 2 gets at most 100 retained messages, the rest are silently
//!   dropped (QoS 0 subscriptions, which MicroDrop uses, get them all);
//! - after a websocket client's clean DISCONNECT, a connection arriving within a few
//!   milliseconds is often dropped right after its CONNACK (a stale disconnect for a reused
//!   connection id); clients must reconnect;
//! - keep-alive 0 is refused; the websocket listener speaks MQTT 3.1.1 only.

mod config;
mod probe;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// MicroDrop 3's MQTT port.
pub const DEFAULT_TCP_PORT: u16 = 1884;
/// MicroDrop 3's MQTT-over-websockets port (its browser UI connects here).
pub const DEFAULT_WEBSOCKET_PORT: u16 = 8083;
/// Smallest accepted `max_packet_size`: MicroDrop device files are ~100 KB, protocols more.
pub const MIN_MAX_PACKET_SIZE: usize = 8 * 1024 * 1024;
/// Default `max_packet_size`.
pub const DEFAULT_MAX_PACKET_SIZE: usize = 16 * 1024 * 1024;
/// `tracing_subscriber::EnvFilter` directive for rumqttd: off, because even at `warn` it logs
/// an ERROR for every normal clean disconnect (see the module doc).
pub const LOG_FILTER_DIRECTIVE: &str = "rumqttd=off";
/// How long [`EmbeddedBroker::start`] waits for the listeners to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-attempt timeout of the readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Where the embedded broker listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerOptions {
    /// MQTT over TCP.
    pub tcp: SocketAddr,
    /// MQTT over websockets (subprotocol `mqtt`), or none.
    pub websocket: Option<SocketAddr>,
    /// Largest MQTT packet accepted from a client, bytes (at least [`MIN_MAX_PACKET_SIZE`]).
    pub max_packet_size: usize,
}

impl BrokerOptions {
    /// MicroDrop 3's ports (1884 and 8083) on loopback, or on every interface when
    /// `all_interfaces` (lets other machines, e.g. a tablet running the UI, attach).
    pub fn microdrop(all_interfaces: bool) -> BrokerOptions {
        let ip = if all_interfaces {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        };
        BrokerOptions {
            tcp: SocketAddr::new(ip, DEFAULT_TCP_PORT),
            websocket: Some(SocketAddr::new(ip, DEFAULT_WEBSOCKET_PORT)),
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
        }
    }
}

impl Default for BrokerOptions {
    /// [`BrokerOptions::microdrop`] on loopback.
    fn default() -> Self {
        BrokerOptions::microdrop(false)
    }
}

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Something already listens on a port we need (most likely MicroDrop's own broker).
    #[error(
        "{what}port {port} is in use: is MicroDrop's broker already running? use --broker HOST:PORT"
    )]
    PortInUse {
        /// `""` for the MQTT port, `"websocket "` for the websocket one.
        what: &'static str,
        /// The port.
        port: u16,
    },
    /// Binding failed for another reason (no such address, permission denied, ...).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The options cannot work.
    #[error("invalid broker options: {0}")]
    InvalidOptions(String),
    /// The broker thread could not be created.
    #[error("cannot start the broker thread: {0}")]
    Spawn(io::Error),
    /// The broker stopped before it accepted connections (its error is in the log).
    #[error("the embedded broker stopped while starting (see the log)")]
    Exited,
    /// The listeners did not answer an MQTT CONNECT in time.
    #[error("the embedded broker did not answer on {addr} within {waited:?}: {last_error}")]
    NotReady {
        /// The address probed.
        addr: SocketAddr,
        /// How long we waited.
        waited: Duration,
        /// The last probe failure.
        last_error: io::Error,
    },
}

/// A running in-process MQTT broker (see the module doc: it cannot be stopped).
#[derive(Debug)]
pub struct EmbeddedBroker {
    options: BrokerOptions,
    _thread: JoinHandle<()>,
}

impl EmbeddedBroker {
    /// Starts rumqttd with `options` and returns once the TCP listener (and the websocket
    /// listener, if any) has answered an MQTT CONNECT. Fails fast, with a hint, when a port is
    /// already taken. Port 0 is refused: rumqttd cannot report the port the OS would pick.
    ///
    /// Blocks for up to 10 s (typically a few milliseconds): from async code call it through
    /// `tokio::task::spawn_blocking`.
    pub fn start(options: BrokerOptions) -> Result<EmbeddedBroker, BrokerError> {
        validate(&options)?;
        ensure_free(options.tcp, "")?;
        if let Some(ws) = options.websocket {
            ensure_free(ws, "websocket ")?;
        }
        let config = config::rumqttd_config(&options);
        let thread = std::thread::Builder::new()
            .name("mqtt-broker".to_string())
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                // Returns only when every listener has failed (e.g. a port taken meanwhile).
                if let Err(e) = broker.start() {
                    tracing::error!(error = %e, "embedded MQTT broker stopped");
                }
            })
            .map_err(BrokerError::Spawn)?;
        wait_until_ready(&options, &thread)?;
        tracing::info!(tcp = %options.tcp, websocket = ?options.websocket, "embedded MQTT broker ready");
        Ok(EmbeddedBroker {
            options,
            _thread: thread,
        })
    }

    /// MQTT over TCP address.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.options.tcp
    }

    /// MQTT over websockets address, if enabled.
    pub fn websocket_addr(&self) -> Option<SocketAddr> {
        self.options.websocket
    }

    /// The options it was started with.
    pub fn options(&self) -> &BrokerOptions {
        &self.options
    }
}

fn validate(options: &BrokerOptions) -> Result<(), BrokerError> {
    let invalid = |m: String| Err(BrokerError::InvalidOptions(m));
    if options.max_packet_size < MIN_MAX_PACKET_SIZE {
        return invalid(format!(
            "max_packet_size {} is below {MIN_MAX_PACKET_SIZE} bytes (MicroDrop device files would not pass)",
            options.max_packet_size
        ));
    }
    let addrs = std::iter::once(options.tcp).chain(options.websocket);
    if addrs.clone().any(|a| a.port() == 0) {
        return invalid("port 0 is not supported: give a fixed port".to_string());
    }
    if options
        .websocket
        .is_some_and(|ws| ws.port() == options.tcp.port())
    {
        return invalid(format!(
            "TCP and websocket both on port {}",
            options.tcp.port()
        ));
    }
    Ok(())
}

/// Binds and releases the address: the clearest way to learn "in use" before rumqttd, which
/// would only log it from its own thread. Another process could take the port in the short
/// window before rumqttd binds it; the readiness probe then fails or reaches that process.
fn ensure_free(addr: SocketAddr, what: &'static str) -> Result<(), BrokerError> {
    match TcpListener::bind(addr) {
        Ok(listener) => {
            drop(listener);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(BrokerError::PortInUse {
            what,
            port: addr.port(),
        }),
        Err(source) => Err(BrokerError::Bind { addr, source }),
    }
}

/// Where to probe a listener: a wildcard bind is reached through loopback.
fn probe_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

fn wait_until_ready(options: &BrokerOptions, thread: &JoinHandle<()>) -> Result<(), BrokerError> {
    type Probe = fn(SocketAddr, Duration) -> io::Result<()>;
    let mut targets: Vec<(SocketAddr, Probe)> =
        vec![(probe_addr(options.tcp), probe::mqtt_over_tcp)];
    if let Some(ws) = options.websocket {
        targets.push((probe_addr(ws), probe::mqtt_over_websocket));
    }
    let started = Instant::now();
    for (addr, probe) in targets {
        loop {
            if thread.is_finished() {
                return Err(BrokerError::Exited);
            }
            let last_error = match probe(addr, PROBE_TIMEOUT) {
                Ok(()) => break,
                Err(e) => e,
            };
            if started.elapsed() >= READY_TIMEOUT {
                return Err(BrokerError::NotReady {
                    addr,
                    waited: started.elapsed(),
                    last_error,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_validated_before_anything_starts() {
        let mut o = BrokerOptions::default();
        assert_eq!(o.tcp.port(), 1884);
        assert_eq!(o.websocket.map(|w| w.port()), Some(8083));
        assert!(o.tcp.ip().is_loopback());
        assert!(BrokerOptions::microdrop(true).tcp.ip().is_unspecified());
        o.max_packet_size = 10 * 1024;
        assert!(matches!(
            EmbeddedBroker::start(o.clone()),
            Err(BrokerError::InvalidOptions(_))
        ));
        o.max_packet_size = DEFAULT_MAX_PACKET_SIZE;
        o.tcp.set_port(0);
        assert!(matches!(
            EmbeddedBroker::start(o.clone()),
            Err(BrokerError::InvalidOptions(_))
        ));
        o.tcp.set_port(8083);
        assert!(matches!(
            EmbeddedBroker::start(o),
            Err(BrokerError::InvalidOptions(_))
        ));
    }

    #[test]
    fn a_taken_port_gives_the_microdrop_hint() {
        let taken = TcpListener::bind("127.0.0.1:0").and_then(|l| Ok((l.local_addr()?, l)));
        let (addr, _listener) = taken.unwrap_or_else(|e| panic!("{e}"));
        let err = ensure_free(addr, "")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            err,
            format!(
                "port {} is in use: is MicroDrop's broker already running? use --broker HOST:PORT",
                addr.port()
            )
        );
        assert_eq!(
            probe_addr("0.0.0.0:1884".parse().unwrap_or(addr)).ip(),
            Ipv4Addr::LOCALHOST
        );
    }
}
