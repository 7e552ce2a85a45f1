//! A plain HTTP/1.1 client (hyper) for the view's tests: requests, and a reader of its
//! server-sent events.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

/// How long a test waits for something that normally takes milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(30);

async fn send(addr: SocketAddr, request: Request<Full<Bytes>>) -> hyper::Response<Incoming> {
    let stream = TcpStream::connect(addr).await.expect("the view listens");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("an HTTP/1.1 handshake");
    tokio::spawn(connection);
    sender.send_request(request).await.expect("a response")
}

/// `method path` with an optional JSON body; the status and the body as text.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json: Option<&str>,
) -> (u16, String) {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if json.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    let body = Full::new(Bytes::from(json.unwrap_or_default().to_owned()));
    let response = send(addr, builder.body(body).expect("a request")).await;
    let status = response.status().as_u16();
    let bytes = tokio::time::timeout(PATIENCE, response.into_body().collect())
        .await
        .expect("the body within the patience")
        .expect("a body")
        .to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// A click on electrode `id`: the status and the answer.
pub async fn click(addr: SocketAddr, id: &str) -> (u16, Value) {
    let body = serde_json::json!({ "electrode": id }).to_string();
    let (status, text) = request(addr, "POST", "/api/toggle", Some(&body)).await;
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, value)
}

/// The view's event stream, read as a browser's EventSource does.
pub struct Events {
    body: Incoming,
    buffer: String,
}

impl Events {
    /// Opens `/events`.
    pub async fn open(addr: SocketAddr) -> Events {
        let request = Request::get("/events")
            .header("host", addr.to_string())
            .body(Full::new(Bytes::new()))
            .expect("a request");
        let response = send(addr, request).await;
        assert_eq!(response.status(), 200);
        Events {
            body: response.into_body(),
            buffer: String::new(),
        }
    }

    /// The next event (name and JSON data), waiting at most until `deadline`.
    pub async fn next(&mut self, deadline: Instant) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                let value = serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {data}"));
                return Some((name, value));
            }
            let frame = timeout_at(deadline, self.body.frame()).await.ok()??.ok()?;
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }

    /// The first `event` whose data satisfies `accept`, within [`PATIENCE`]; panics with the
    /// last one seen otherwise.
    pub async fn until(&mut self, event: &str, mut accept: impl FnMut(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        let mut last = None;
        while let Some((name, value)) = self.next(deadline).await {
            if name == event {
                if accept(&value) {
                    return value;
                }
                last = Some(value);
            }
        }
        panic!("no `{event}` event as expected within {PATIENCE:?}; last: {last:?}");
    }
}
