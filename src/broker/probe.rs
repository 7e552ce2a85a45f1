//! Readiness probes: a minimal MQTT 3.1.1 CONNECT / CONNACK exchange over plain TCP or over a
//! websocket (subprotocol `mqtt`), with blocking std sockets and timeouts.
//!
//! A CONNACK (rather than a bare TCP connect) proves the router answers. The probe then just
//! closes its socket, deliberately WITHOUT a DISCONNECT: in rumqttd 0.20 a clean DISCONNECT
//! (over websockets especially) queues a second, stale disconnect for the same connection id,
//! which the id's next owner (for example the plugin connecting right after startup) receives.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// CONNACK with "connection accepted".
const CONNACK_OK: [u8; 4] = [0x20, 0x02, 0x00, 0x00];
/// Largest HTTP response head we accept from the websocket listener.
const MAX_HTTP_HEAD: usize = 4096;

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// CONNECT (MQTT 3.1.1, clean session, keep-alive 60 s) with a client id unique to this call.
fn connect_packet() -> Vec<u8> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let client_id = format!("dropbot-plugin-probe-{}-{n}", std::process::id());
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    // The id is short: the remaining length always fits one byte.
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

fn open(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

/// Connects to an MQTT broker over TCP, then closes the socket.
pub(crate) fn mqtt_over_tcp(addr: SocketAddr, timeout: Duration) -> io::Result<()> {
    let mut stream = open(addr, timeout)?;
    stream.write_all(&connect_packet())?;
    let mut ack = [0u8; 4];
    stream.read_exact(&mut ack)?;
    if ack != CONNACK_OK {
        return Err(invalid(format!("unexpected CONNACK {ack:02x?}")));
    }
    Ok(())
}

/// A client-to-server binary frame. The masking key is zero (allowed: the key only has to be
/// present), so the payload goes unchanged.
fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    // Payloads here are under 126 bytes: one length byte.
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    frame
}

/// Connects to an MQTT broker over a websocket (subprotocol `mqtt`), then closes the socket.
pub(crate) fn mqtt_over_websocket(addr: SocketAddr, timeout: Duration) -> io::Result<()> {
    let mut stream = open(addr, timeout)?;
    let request = format!(
        "GET /mqtt HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: ZHJvcGJvdC1wcm9iZS0xNg==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let head = read_http_head(&mut stream)?;
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default();
    if !status.contains(" 101 ") {
        return Err(invalid(format!("websocket upgrade refused: {status:?}")));
    }
    let speaks_mqtt = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("sec-websocket-protocol:") && l.contains("mqtt")
    });
    if !speaks_mqtt {
        return Err(invalid(
            "websocket listener did not accept subprotocol mqtt",
        ));
    }
    stream.write_all(&ws_frame(0x2, &connect_packet()))?;
    let mut header = [0u8; 2];
    stream.read_exact(&mut header)?;
    let len = usize::from(header[1] & 0x7F);
    if header[0] & 0x0F != 0x2 || header[1] & 0x80 != 0 || len > 125 {
        return Err(invalid(format!("unexpected websocket frame {header:02x?}")));
    }
    let mut ack = vec![0u8; len];
    stream.read_exact(&mut ack)?;
    if ack != CONNACK_OK {
        return Err(invalid(format!("unexpected CONNACK {ack:02x?}")));
    }
    Ok(())
}

fn read_http_head(stream: &mut TcpStream) -> io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HTTP_HEAD {
            return Err(invalid("websocket upgrade response too long"));
        }
        stream.read_exact(&mut byte)?;
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_packet_is_well_formed() {
        let p = connect_packet();
        assert_eq!(p[0], 0x10);
        assert_eq!(usize::from(p[1]), p.len() - 2);
        assert_eq!(&p[2..8], b"\x00\x04MQTT");
        let id_len = usize::from(u16::from_be_bytes([p[12], p[13]]));
        assert_eq!(id_len, p.len() - 14);
        assert_ne!(connect_packet()[14..], p[14..], "client ids must differ");
    }

    #[test]
    fn ws_frames_are_masked_with_a_zero_key() {
        assert_eq!(
            ws_frame(0x2, &[0xE0, 0x00]),
            vec![0x82, 0x82, 0, 0, 0, 0, 0xE0, 0x00]
        );
    }

    #[test]
    fn probes_fail_cleanly_when_nothing_listens() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
        let addr = free.unwrap_or_else(|e| panic!("{e}"));
        let t = Duration::from_millis(200);
        assert!(mqtt_over_tcp(addr, t).is_err());
        assert!(mqtt_over_websocket(addr, t).is_err());
    }
}
