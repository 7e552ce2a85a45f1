//! The embedded broker's websocket listener, as MicroDrop 3's browser UI uses it: an
//! independent websocket client (tungstenite) asking for subprotocol `mqtt`, speaking MQTT
//! 3.1.1 bytes, exchanging messages with a TCP client (rumqttc).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use dropbot_plugin::broker::EmbeddedBroker;
use dropbot_testkit::embedded_broker;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

const WAIT: Duration = Duration::from_secs(10);

fn start_broker() -> EmbeddedBroker {
    embedded_broker(true).unwrap_or_else(|e| panic!("broker: {e}"))
}

/// MQTT string: two length bytes, then the bytes.
fn mqtt_str(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

/// Fixed header with a variable-length remaining length.
fn packet(first: u8, body: Vec<u8>) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend(body);
    out
}

/// A bare-bytes MQTT client over a websocket.
struct WsMqtt {
    ws: WebSocket<TcpStream>,
    buffer: Vec<u8>,
}

impl WsMqtt {
    fn connect(addr: SocketAddr, client_id: &str) -> Result<WsMqtt, String> {
        let stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(WAIT))
            .map_err(|e| e.to_string())?;
        let mut request = format!("ws://{addr}/mqtt")
            .into_client_request()
            .map_err(|e| e.to_string())?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
        let (ws, response) = tungstenite::client(request, stream).map_err(|e| e.to_string())?;
        let protocol = response.headers().get("Sec-WebSocket-Protocol");
        if protocol.and_then(|v| v.to_str().ok()) != Some("mqtt") {
            return Err(format!("subprotocol not mqtt: {protocol:?}"));
        }
        let mut c = WsMqtt {
            ws,
            buffer: Vec::new(),
        };
        let mut body = mqtt_str("MQTT");
        body.extend([0x04, 0x02, 0x00, 0x3C]); // level 4, clean session, keep-alive 60 s
        body.extend(mqtt_str(client_id));
        c.send(packet(0x10, body))?;
        let (first, rest) = c.read_packet()?;
        if first != 0x20 || rest != [0x00, 0x00] {
            return Err(format!("bad CONNACK {first:02x} {rest:02x?}"));
        }
        Ok(c)
    }

    fn send(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        self.ws
            .send(Message::Binary(bytes))
            .map_err(|e| e.to_string())
    }

    /// Next MQTT packet: (first byte, rest), whatever the websocket framing.
    fn read_packet(&mut self) -> Result<(u8, Vec<u8>), String> {
        loop {
            if let Some((first, body, used)) = parse(&self.buffer) {
                self.buffer.drain(..used);
                return Ok((first, body));
            }
            match self.ws.read().map_err(|e| e.to_string())? {
                Message::Binary(b) => self.buffer.extend(b),
                Message::Close(c) => return Err(format!("closed: {c:?}")),
                _ => {}
            }
        }
    }

    fn subscribe(&mut self, filter: &str) -> Result<(), String> {
        let mut body = vec![0x00, 0x01];
        body.extend(mqtt_str(filter));
        body.push(0x00); // QoS 0, like MicroDrop's UI
        self.send(packet(0x82, body))?;
        match self.read_packet()? {
            (0x90, rest) if rest == [0x00, 0x01, 0x00] => Ok(()),
            other => Err(format!("bad SUBACK {other:02x?}")),
        }
    }

    fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<(), String> {
        let mut body = mqtt_str(topic);
        body.extend_from_slice(payload);
        self.send(packet(0x30, body))
    }

    /// Next PUBLISH (QoS 0): (topic, payload, retain).
    fn next_publish(&mut self) -> Result<(String, Vec<u8>, bool), String> {
        loop {
            let (first, body) = self.read_packet()?;
            if first & 0xF0 != 0x30 {
                continue;
            }
            let len = usize::from(u16::from_be_bytes([body[0], body[1]]));
            let topic = String::from_utf8_lossy(&body[2..2 + len]).into_owned();
            return Ok((topic, body[2 + len..].to_vec(), first & 0x01 == 1));
        }
    }
}

/// Whether a fresh raw TCP client gets a CONNACK and then a PINGRESP (i.e. is not dropped).
fn tcp_client_survives(addr: SocketAddr, client_id: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut body = mqtt_str("MQTT");
    body.extend([0x04, 0x02, 0x00, 0x3C]);
    body.extend(mqtt_str(client_id));
    let mut connack = [0u8; 4];
    let mut pingresp = [0u8; 2];
    s.write_all(&packet(0x10, body)).is_ok()
        && s.read_exact(&mut connack).is_ok()
        && connack == [0x20, 0x02, 0x00, 0x00]
        && s.write_all(&[0xC0, 0x00]).is_ok()
        && s.read_exact(&mut pingresp).is_ok()
        && pingresp == [0xD0, 0x00]
}

#[test]
fn first_connection_after_start_is_not_dropped() {
    // The readiness probes must not leave a stale disconnect behind for the next client.
    let mut dropped = 0;
    for i in 0..50 {
        let broker = start_broker();
        if !tcp_client_survives(broker.tcp_addr(), &format!("plugin-{i}")) {
            dropped += 1;
        }
    }
    assert_eq!(dropped, 0, "first clients dropped out of 50");
}

/// Fails with rumqttd 0.20 (the latest), 10-25% of the time per connection on this machine:
/// after a websocket client sends DISCONNECT and closes, the router removes its connection id;
/// the websocket link then reports the closed socket as a second disconnect for that id, which
/// by then may belong to the next client (the log shows "no-connection id N is already gone"
/// or the new client's "router-drop"; same symptom as bytebeamio/rumqtt issue 928). Clients
/// arriving 20 ms later, or after an abrupt close without DISCONNECT, are not affected.
#[test]
#[ignore = "known rumqttd 0.20 defect: stale disconnect after a websocket DISCONNECT"]
fn connection_after_a_websocket_disconnect_is_not_dropped() {
    let broker = start_broker();
    let ws_addr = broker
        .websocket_addr()
        .unwrap_or_else(|| panic!("no websocket"));
    let mut dropped = 0;
    for i in 0..100 {
        let helper = WsMqtt::connect(ws_addr, &format!("helper-{i}"));
        let mut helper = helper.unwrap_or_else(|e| panic!("helper: {e}"));
        let _ = helper.send(vec![0xE0, 0x00]); // DISCONNECT, like mqtt.js `end()`
        let _ = helper.ws.close(None);
        let _ = helper.ws.flush();
        drop(helper);
        if !tcp_client_survives(broker.tcp_addr(), &format!("next-{i}")) {
            dropped += 1;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(dropped, 0, "clients dropped out of 100");
}

/// One complete packet at the start of `buf`: (first byte, body, bytes used).
fn parse(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let first = *buf.first()?;
    let (mut len, mut shift, mut pos) = (0usize, 0, 1);
    loop {
        let byte = *buf.get(pos)?;
        len |= usize::from(byte & 0x7F) << shift;
        pos += 1;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let body = buf.get(pos..pos + len)?.to_vec();
    Some((first, body, pos + len))
}

/// The next packet `want` accepts (others are skipped), or `None` after [`WAIT`].
async fn next(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Packet>,
    want: fn(&Packet) -> bool,
) -> Option<Packet> {
    let found = tokio::time::timeout(WAIT, async {
        while let Some(p) = rx.recv().await {
            if want(&p) {
                return Some(p);
            }
        }
        None
    });
    found.await.ok().flatten()
}

#[tokio::test]
async fn websocket_client_speaks_mqtt_with_tcp_clients() {
    let broker = start_broker();
    let ws_addr = broker
        .websocket_addr()
        .unwrap_or_else(|| panic!("no websocket"));
    let tcp_addr = broker.tcp_addr();
    let mut opts = MqttOptions::new("tcp-side", tcp_addr.ip().to_string(), tcp_addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(p)) => {
                    let _ = tx.send(p);
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("TCP client stopped: {e}");
                    break;
                }
            }
        }
    });
    // Retained state published over TCP, to be read by the "browser".
    let topic = "microdrop/electrodes-model/state/voltage";
    let published = client
        .publish(topic, QoS::AtLeastOnce, true, b"90 V".to_vec())
        .await;
    assert!(published.is_ok());
    // PubAck means the retained message is stored before the browser subscribes.
    let stored = next(&mut rx, |p| matches!(p, Packet::PubAck(_))).await;
    assert!(stored.is_some());
    assert!(client
        .subscribe("from-ui/#", QoS::AtLeastOnce)
        .await
        .is_ok());
    let acked = next(&mut rx, |p| matches!(p, Packet::SubAck(_))).await;
    assert!(acked.is_some());

    let ui = tokio::task::spawn_blocking(move || -> Result<(String, Vec<u8>, bool), String> {
        let mut ui = WsMqtt::connect(ws_addr, "browser-ui")?;
        ui.subscribe("microdrop/electrodes-model/state/#")?;
        let retained = ui.next_publish()?;
        ui.publish("from-ui/hello", b"hi from the browser")?;
        Ok(retained)
    })
    .await;
    let retained = ui
        .unwrap_or_else(|e| panic!("join: {e}"))
        .unwrap_or_else(|e| panic!("websocket client: {e}"));
    assert_eq!(retained, (topic.to_string(), b"90 V".to_vec(), true));

    let got = next(&mut rx, |p| matches!(p, Packet::Publish(_))).await;
    match got {
        Some(Packet::Publish(p)) => {
            assert_eq!(p.topic, "from-ui/hello");
            assert_eq!(&p.payload[..], b"hi from the browser");
        }
        other => panic!("no publish from the websocket client: {other:?}"),
    }
}
