//! The HTTP side (axum): the page (three small files compiled into the binary), a stream of
//! server-sent events that pushes the picture, the click endpoint, and a guard that answers
//! only this machine's host names while the view listens on loopback.
//!
//! | path | what |
//! |---|---|
//! | `GET /` (`/view.js`, `/view.css`) | the page |
//! | `GET /events` | server-sent events `device`, `live`, `capacitance` (see [`Hub`]) |
//! | `GET /api/state` | the `live` state now, as JSON |
//! | `POST /api/toggle` `{"electrode": "<id>"}` | toggle it as MicroDrop's electrodes model does |

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use super::addr::host_allowed;
use super::hub::{Cursor, Hub, Message, Viewer};
use super::listen::ACTIVE_ELECTRODES_TOPIC;
use super::picture::ClickError;
use crate::bus::{BusError, BusHandle};
use crate::view::chip::ToggleError;

/// The page, its script and its style sheet.
pub const INDEX_HTML: &str = include_str!("assets/index.html");
/// The page's script.
pub const VIEW_JS: &str = include_str!("assets/view.js");
/// The page's style sheet.
pub const VIEW_CSS: &str = include_str!("assets/view.css");

/// Pages open at once, at most (each holds one event stream).
pub const MAX_VIEWERS: usize = 16;
/// Largest request body (a click is about 30 bytes).
const MAX_BODY: usize = 1024;
/// Least time between two batches of events to one page: changes in between are coalesced.
const MIN_GAP: Duration = Duration::from_millis(50);
/// How long a browser waits before reconnecting a broken event stream.
const RETRY: Duration = Duration::from_secs(2);
/// Everything the page loads comes from the view itself.
const CSP: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'";

/// What the handlers share.
pub struct App {
    /// The picture.
    pub hub: Arc<Hub>,
    /// The view's MQTT connection (clicks are published here).
    pub bus: BusHandle,
    /// Where the view listens (decides the host guard).
    pub listen: SocketAddr,
    /// Turns true at shutdown: event streams end.
    pub stop: watch::Receiver<bool>,
}

/// The view's routes.
pub fn router(app: Arc<App>) -> Router {
    let listen = app.listen;
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/view.js",
            get(|| async { asset("text/javascript; charset=utf-8", VIEW_JS) }),
        )
        .route(
            "/view.css",
            get(|| async { asset("text/css; charset=utf-8", VIEW_CSS) }),
        )
        .route("/events", get(events))
        .route("/api/state", get(state))
        .route("/api/toggle", post(toggle))
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "no such page".into()) })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(listen, guard))
        .with_state(app)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `{"error": why}` with `status`.
fn problem(status: StatusCode, why: String) -> Response {
    (status, Json(json!({ "error": why }))).into_response()
}

/// Refuses foreign `Host` names on loopback (DNS rebinding) and adds the security headers.
async fn guard(State(listen): State<SocketAddr>, request: Request, next: Next) -> Response {
    let host = request.headers().get(header::HOST);
    let text = host.and_then(|h| h.to_str().ok());
    if (host.is_some() && text.is_none()) || !host_allowed(&listen, text) {
        let why = format!(
            "this view answers only to this machine's names (it listens on {listen}); \
             open it as http://{listen}/"
        );
        return problem(StatusCode::FORBIDDEN, why);
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn state(State(app): State<Arc<App>>) -> Response {
    let live = app.hub.live_json();
    (
        [(header::CONTENT_TYPE, "application/json")],
        live.to_string(),
    )
        .into_response()
}

/// A click: `{"electrode": "<id>"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Click {
    electrode: String,
}

/// Why a click was not published.
enum Refusal {
    Click(ClickError),
    Bus(BusError),
}

async fn toggle(State(app): State<Arc<App>>, body: Result<Json<Click>, JsonRejection>) -> Response {
    let Click { electrode } = match body {
        Ok(Json(click)) => click,
        Err(rejection) => {
            let why = format!(
                "{}; send {{\"electrode\": \"<id>\"}}",
                rejection.body_text()
            );
            return problem(rejection.status(), why);
        }
    };
    if !app.bus.is_connected() {
        let why = "the view is not connected to the MQTT broker; try again when it is".into();
        return problem(StatusCode::SERVICE_UNAVAILABLE, why);
    }
    // Computed, published and noted under the picture's lock: two clicks cannot interleave.
    let outcome = app.hub.update(|p| {
        let list = p.click(&electrode).map_err(Refusal::Click)?;
        app.bus
            .publish_retained_once(ACTIVE_ELECTRODES_TOPIC, &json!(list))
            .map_err(Refusal::Bus)?;
        p.published(list.clone());
        Ok(list)
    });
    match outcome {
        Ok(list) => Json(json!({ "active-electrodes": list })).into_response(),
        Err(Refusal::Click(e @ ClickError::Toggle(ToggleError::Unknown(_)))) => {
            problem(StatusCode::NOT_FOUND, e.to_string())
        }
        Err(Refusal::Click(e)) => problem(StatusCode::CONFLICT, e.to_string()),
        Err(Refusal::Bus(e)) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("could not publish the click: {e}"),
        ),
    }
}

/// One page's event stream.
struct Feed {
    hub: Arc<Hub>,
    cursor: Cursor,
    pending: VecDeque<Message>,
    changed: watch::Receiver<()>,
    stop: watch::Receiver<bool>,
    sent_at: Option<Instant>,
    retry_sent: bool,
    _viewer: Viewer,
}

async fn events(State(app): State<Arc<App>>) -> Response {
    let Some(viewer) = app.hub.join(MAX_VIEWERS) else {
        let why = format!("{MAX_VIEWERS} pages are open already; close one");
        return problem(StatusCode::SERVICE_UNAVAILABLE, why);
    };
    let feed = Feed {
        hub: app.hub.clone(),
        cursor: Cursor::default(),
        pending: VecDeque::new(),
        changed: app.hub.subscribe(),
        stop: app.stop.clone(),
        sent_at: None,
        retry_sent: false,
        _viewer: viewer,
    };
    let stream = futures_util::stream::unfold(feed, next_event);
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The next event for a page: what is pending, else what changed since its cursor, waiting
/// for a change (and at least [`MIN_GAP`] after the previous batch). `None` at shutdown.
async fn next_event(mut feed: Feed) -> Option<(Result<Event, Infallible>, Feed)> {
    loop {
        if *feed.stop.borrow() {
            return None;
        }
        if let Some(message) = feed.pending.pop_front() {
            let mut event = Event::default().event(message.event).data(&*message.data);
            if !feed.retry_sent {
                feed.retry_sent = true;
                event = event.retry(RETRY);
            }
            return Some((Ok(event), feed));
        }
        if let Some(at) = feed.sent_at {
            tokio::select! {
                () = tokio::time::sleep_until(at + MIN_GAP) => {}
                _ = feed.stop.changed() => return None,
            }
        }
        feed.changed.borrow_and_update();
        let fresh = feed.hub.poll(&mut feed.cursor);
        if fresh.is_empty() {
            tokio::select! {
                changed = feed.changed.changed() => if changed.is_err() { return None },
                _ = feed.stop.changed() => return None,
            }
            continue;
        }
        feed.sent_at = Some(Instant::now());
        feed.pending.extend(fresh);
    }
}
