//! The view's routes in-process (no broker: the view's MQTT connection never comes up).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::watch;
use tower::ServiceExt;

use super::http::{self, App, INDEX_HTML, MAX_VIEWERS, VIEW_CSS, VIEW_JS};
use super::hub::Hub;
use crate::bus::{BusClient, BusOptions};

struct Fixture {
    routes: Router,
    _client: BusClient,
    _stop: watch::Sender<bool>,
}

/// The routes, listening (nominally) on `listen`, with a bus that never connects.
fn fixture(listen: &str) -> Fixture {
    // Port 1 on loopback: nothing listens there, so the view stays disconnected.
    let client = BusClient::start(BusOptions::new("dropbot-view", "127.0.0.1", 1)).unwrap();
    let (stop, stopped) = watch::channel(false);
    let app = Arc::new(App {
        hub: Arc::new(Hub::new()),
        bus: client.handle(),
        listen: listen.parse().unwrap(),
        stop: stopped,
    });
    Fixture {
        routes: http::router(app),
        _client: client,
        _stop: stop,
    }
}

fn get(path: &str, host: &str) -> Request<Body> {
    Request::get(path)
        .header(header::HOST, host)
        .body(Body::empty())
        .unwrap()
}

fn post(path: &str, content_type: &str, body: &str) -> Request<Body> {
    Request::post(path)
        .header(header::HOST, "127.0.0.1:8088")
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body.to_owned()))
        .unwrap()
}

async fn send(f: &Fixture, request: Request<Body>) -> (StatusCode, String, String) {
    let response = f.routes.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let kind = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, kind, String::from_utf8_lossy(&body).into_owned())
}

fn error_of(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["error"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn the_page_is_served_small_and_self_contained() {
    let f = fixture("127.0.0.1:8088");
    for (path, kind) in [
        ("/", "text/html"),
        ("/view.js", "text/javascript"),
        ("/view.css", "text/css"),
    ] {
        let response = f
            .routes
            .clone()
            .oneshot(get(path, "localhost:8088"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers();
        let ct = headers[header::CONTENT_TYPE].to_str().unwrap();
        assert!(ct.starts_with(kind), "{path}: {ct}");
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{csp}");
    }
    let total = INDEX_HTML.len() + VIEW_JS.len() + VIEW_CSS.len();
    assert!(total < 24 * 1024, "the page is {total} bytes");
    for text in [INDEX_HTML, VIEW_JS, VIEW_CSS] {
        // The SVG namespace is a name, not something fetched.
        let fetched = text.replace("http://www.w3.org/2000/svg", "");
        assert!(
            !fetched.contains("http:") && !fetched.contains("https:") && !fetched.contains("//cdn")
        );
    }
}

#[tokio::test]
async fn foreign_host_names_are_refused_on_loopback() {
    let f = fixture("127.0.0.1:8088");
    let (status, kind, body) = send(&f, get("/", "attacker.example:8088")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(kind.starts_with("application/json"));
    assert!(error_of(&body).contains("127.0.0.1:8088"), "{body}");
    let (status, ..) = send(&f, get("/api/state", "[::1]:8088")).await;
    assert_eq!(status, StatusCode::OK);
    // Listening beyond loopback was the user's choice: any name is fine.
    let open = fixture("0.0.0.0:8088");
    let (status, ..) = send(&open, get("/", "lab-pc.example:8088")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn bad_clicks_get_a_clear_answer() {
    let f = fixture("127.0.0.1:8088");
    let json = "application/json";
    let cases = [
        (
            post("/api/toggle", json, "{not json"),
            StatusCode::BAD_REQUEST,
        ),
        (
            post("/api/toggle", "text/plain", r#"{"electrode":"e"}"#),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            post("/api/toggle", json, r#"{"electrode": 3}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            post("/api/toggle", json, r#"{"electrode":"e","hv":true}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            post("/api/toggle", json, &"x".repeat(4096)),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (request, want) in cases {
        let (status, _, body) = send(&f, request).await;
        assert_eq!(status, want, "{body}");
        if status != StatusCode::PAYLOAD_TOO_LARGE {
            assert!(error_of(&body).contains("electrode"), "{body}");
        }
    }
    // A well-formed click while the view has no broker: refused, not queued for later.
    let (status, _, body) = send(
        &f,
        post("/api/toggle", json, r#"{"electrode":"electrode000"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(error_of(&body).contains("MQTT"), "{body}");
    let (status, _, body) = send(&f, get("/api/toggle", "localhost")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    let (status, _, body) = send(&f, get("/nothing-here", "localhost")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_of(&body), "no such page");
}

#[tokio::test]
async fn a_page_gets_the_chip_and_the_state_first_and_pages_are_capped() {
    let f = fixture("127.0.0.1:8088");
    let mut streams = Vec::new();
    for _ in 0..MAX_VIEWERS {
        let response = f
            .routes
            .clone()
            .oneshot(get("/events", "localhost"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        streams.push(response.into_body());
    }
    let (status, _, body) = send(&f, get("/events", "localhost")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(error_of(&body).contains("open already"), "{body}");

    let mut first = streams.remove(0);
    let mut text = String::new();
    while !(text.contains("event: device") && text.contains("event: live")) {
        let frame = tokio::time::timeout(Duration::from_secs(10), first.frame())
            .await
            .expect("events come without waiting")
            .expect("the stream goes on")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(text.contains("retry:2000"), "{text}");
    assert!(text.contains("data: null"), "no device yet: {text}");
    assert!(text.contains(r#""bus":"connecting""#), "{text}");
    // A closed page frees its place.
    drop(first);
    let again = f
        .routes
        .clone()
        .oneshot(get("/events", "localhost"))
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
}
