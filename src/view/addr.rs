//! Where the view listens, and which `Host` headers it answers: on loopback only names of this
//! machine, so that a web page elsewhere cannot reach the view through DNS rebinding.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The view's default port.
pub const DEFAULT_PORT: u16 = 8088;

/// Parses a `--view` address: `HOST:PORT` (an IP address) or a bare `PORT` on loopback.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    text.parse::<SocketAddr>().map_err(|_| {
        format!("`{text}` is not PORT or IP:PORT (e.g. 8088, 127.0.0.1:8088, 0.0.0.0:8088)")
    })
}

/// Whether a request with this `Host` header is answered by a view listening on `listen`.
/// Any host is fine when the user chose to listen beyond loopback; a request without the
/// header (HTTP/1.0 tools) is fine too, since browsers always send one.
pub fn host_allowed(listen: &SocketAddr, host: Option<&str>) -> bool {
    if !listen.ip().is_loopback() {
        return true;
    }
    let Some(host) = host else {
        return true;
    };
    let name = strip_port(host.trim());
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `name:port` -> `name`, `[v6]:port` -> `[v6]`; anything else as it is.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_port_means_loopback() {
        assert_eq!(parse_listen("8088").unwrap().to_string(), "127.0.0.1:8088");
        assert_eq!(
            parse_listen("0.0.0.0:80").unwrap().to_string(),
            "0.0.0.0:80"
        );
        assert_eq!(parse_listen("[::1]:0").unwrap().to_string(), "[::1]:0");
        let e = parse_listen("localhost:8088").unwrap_err();
        assert!(e.contains("IP:PORT"), "{e}");
        assert!(parse_listen("99999").is_err());
    }

    #[test]
    fn on_loopback_only_this_machines_names_are_answered() {
        let local = parse_listen("8088").unwrap();
        for ok in [
            "127.0.0.1:8088",
            "localhost:8088",
            "LOCALHOST",
            "[::1]:8088",
            "127.1.2.3",
        ] {
            assert!(host_allowed(&local, Some(ok)), "{ok}");
        }
        for bad in [
            "evil.example:8088",
            "192.168.1.4:8088",
            "localhost.evil.example",
            "[::2]:8088",
            "",
        ] {
            assert!(!host_allowed(&local, Some(bad)), "{bad}");
        }
        assert!(host_allowed(&local, None));
        let everywhere = parse_listen("0.0.0.0:8088").unwrap();
        assert!(host_allowed(&everywhere, Some("lab-pc.example:8088")));
    }
}
