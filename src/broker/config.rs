//! The rumqttd configuration, built in code (no config file).

use std::collections::HashMap;

use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};

use super::BrokerOptions;

/// Connections the router accepts at once. MicroDrop 3's helpers open a short-lived client per
/// request, so connections churn; 1024 is far above what one desktop session uses.
const MAX_CONNECTIONS: usize = 1024;
/// Messages the router hands a QoS 0 subscriber per read. rumqttd also truncates the retained
/// messages sent on a new subscription to this count, so it must exceed the number of
/// retained topics one wildcard can match.
const MAX_OUTGOING_PACKET_COUNT: u64 = 4096;
/// Each topic filter keeps its recent messages in memory in segments of this size (soft: a
/// single larger message still fits) ...
const SEGMENT_SIZE: usize = 2 * 1024 * 1024;
/// ... and at most this many segments, so a busy stream costs at most ~8 MiB per filter.
const SEGMENT_COUNT: usize = 4;
/// Time a new connection has to send CONNECT (the field is a u16 of milliseconds).
const CONNECTION_TIMEOUT_MS: u16 = 60_000;
/// Packets a connection may buffer before the router reads them.
const MAX_INFLIGHT_COUNT: usize = 100;

fn connection_settings(options: &BrokerOptions) -> ConnectionSettings {
    ConnectionSettings {
        connection_timeout_ms: CONNECTION_TIMEOUT_MS,
        max_payload_size: options.max_packet_size,
        max_inflight_count: MAX_INFLIGHT_COUNT,
        auth: None,
        external_auth: None,
        // Without dynamic filters rumqttd DISCONNECTS a client that publishes to a topic no
        // one subscribed to: MicroDrop publishes to such topics all the time.
        dynamic_filters: true,
    }
}

fn server(name: &str, options: &BrokerOptions, listen: std::net::SocketAddr) -> ServerSettings {
    ServerSettings {
        name: name.to_string(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: connection_settings(options),
    }
}

/// MQTT 3.1.1 on `options.tcp`, and MQTT 3.1.1 over websockets on `options.websocket`.
pub(crate) fn rumqttd_config(options: &BrokerOptions) -> Config {
    let router = RouterConfig {
        max_connections: MAX_CONNECTIONS,
        max_outgoing_packet_count: MAX_OUTGOING_PACKET_COUNT,
        max_segment_size: SEGMENT_SIZE,
        max_segment_count: SEGMENT_COUNT,
        ..RouterConfig::default()
    };
    let tcp = HashMap::from([("1".to_string(), server("mqtt-tcp", options, options.tcp))]);
    let ws = options
        .websocket
        .map(|addr| HashMap::from([("1".to_string(), server("mqtt-ws", options, addr))]));
    Config {
        router,
        v4: Some(tcp),
        ws,
        ..Config::default()
    }
}
