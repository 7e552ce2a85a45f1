//! The embedded broker (`broker/`) on free loopback ports, for its own tests.

use std::net::{SocketAddr, TcpListener};

use dropbot_plugin::broker::{BrokerError, BrokerOptions, EmbeddedBroker, DEFAULT_MAX_PACKET_SIZE};

/// An embedded broker on free ports (plus a websocket listener if asked), retrying when another
/// test grabs a port in between. rumqttd cannot report a port chosen with 0, hence the probing.
pub fn embedded_broker(websocket: bool) -> Result<EmbeddedBroker, BrokerError> {
    let mut last = None;
    for _ in 0..10 {
        let options = BrokerOptions {
            tcp: free_addr().map_err(BrokerError::Spawn)?,
            websocket: match websocket {
                true => Some(free_addr().map_err(BrokerError::Spawn)?),
                false => None,
            },
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
        };
        match EmbeddedBroker::start(options) {
            Err(e @ BrokerError::PortInUse { .. }) => last = Some(e),
            other => return other,
        }
    }
    Err(last.unwrap_or(BrokerError::InvalidOptions("no free ports".into())))
}

fn free_addr() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}
