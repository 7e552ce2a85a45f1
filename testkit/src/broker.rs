//! [`TestBroker`]: the brokers users run, for tests that must pass on each of them: mosquitto
//! with its default configuration, and MicroDrop 3's own mosca.

use std::fmt;
use std::io;

use super::{Mosca, Mosquitto};
use dropbot_plugin::bus::BusOptions;

/// Which broker a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BrokerKind {
    /// mosquitto with its default configuration (Nagle's algorithm on, retain flag set on
    /// stored messages).
    #[default]
    Mosquitto,
    /// MicroDrop 3's broker, mosca 2.8 (retain flag always cleared).
    Mosca,
}

impl BrokerKind {
    /// Both kinds, for tests that run on each.
    pub const ALL: [BrokerKind; 2] = [BrokerKind::Mosquitto, BrokerKind::Mosca];
}

impl fmt::Display for BrokerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BrokerKind::Mosquitto => "mosquitto",
            BrokerKind::Mosca => "mosca",
        })
    }
}

enum Inner {
    Mosquitto(Mosquitto),
    Mosca(Mosca),
}

/// A private broker of either kind on 127.0.0.1, killed on drop.
pub struct TestBroker {
    inner: Inner,
}

impl TestBroker {
    /// Starts a broker of `kind` on a free port (mosca: installs its npm packages first if
    /// needed).
    pub fn start(kind: BrokerKind) -> io::Result<TestBroker> {
        let inner = match kind {
            BrokerKind::Mosquitto => Inner::Mosquitto(Mosquitto::start()?),
            BrokerKind::Mosca => Inner::Mosca(Mosca::start()?),
        };
        Ok(TestBroker { inner })
    }

    /// Which kind it is.
    pub fn kind(&self) -> BrokerKind {
        match self.inner {
            Inner::Mosquitto(_) => BrokerKind::Mosquitto,
            Inner::Mosca(_) => BrokerKind::Mosca,
        }
    }

    /// The host to connect to: `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The MQTT TCP port.
    pub fn port(&self) -> u16 {
        match &self.inner {
            Inner::Mosquitto(m) => m.port(),
            Inner::Mosca(m) => m.port(),
        }
    }

    /// Bus options for plugin `name` connecting over TCP.
    pub fn bus_options(&self, name: &str) -> BusOptions {
        BusOptions::new(name, self.host(), self.port())
    }

    /// The mosquitto inside, if it is one (Unix socket, TLS, ...).
    pub fn as_mosquitto(&mut self) -> Option<&mut Mosquitto> {
        match &mut self.inner {
            Inner::Mosquitto(m) => Some(m),
            Inner::Mosca(_) => None,
        }
    }

    /// The mosca inside, if it is one (`drop_clients`, the websocket port).
    pub fn as_mosca(&mut self) -> Option<&mut Mosca> {
        match &mut self.inner {
            Inner::Mosquitto(_) => None,
            Inner::Mosca(m) => Some(m),
        }
    }

    /// Whether the broker process is running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.inner {
            Inner::Mosquitto(m) => m.is_running(),
            Inner::Mosca(m) => m.is_running(),
        }
    }

    /// Everything the broker logged so far (for failing tests).
    pub fn log(&self) -> String {
        match &self.inner {
            Inner::Mosquitto(m) => m.log(),
            Inner::Mosca(m) => m.log(),
        }
    }

    /// Crash: SIGKILL, then wait for the process to be gone.
    pub fn kill(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Mosquitto(m) => m.kill(),
            Inner::Mosca(m) => m.kill(),
        }
    }

    /// Starts the broker again on the same port, without its retained messages.
    pub fn restart(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Mosquitto(m) => m.restart(),
            Inner::Mosca(m) => m.restart(),
        }
    }
}
