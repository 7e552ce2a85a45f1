//! Routes written with `{name}` placeholders, turned into MQTT filters and matched against
//! concrete topics.
//!
//! A pattern like `microdrop/{plugin}/signal/connected` subscribes to
//! `microdrop/+/signal/connected`; a message on `microdrop/dropbot/signal/connected` routes to
//! that pattern's key with `plugin = "dropbot"`. A router made with [`Router::for_plugin`]
//! replaces `{self}` by the plugin's own name before anything else.

use super::error::BusError;
use super::topics::validate_name;

/// The values a topic's levels gave to a route's `{name}` placeholders.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captures {
    pairs: Vec<(String, String)>,
}

impl Captures {
    /// The value captured by `{name}`, if the route has that placeholder.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All `(name, value)` pairs in pattern order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Number of captured values.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether the route had no placeholders.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    Capture(String),
}

#[derive(Debug, Clone)]
struct Route<K> {
    pattern: String,
    filter: String,
    levels: Vec<Level>,
    key: K,
}

/// Parses a pattern into levels; `self_name` replaces `{self}` when given.
fn parse_pattern(pattern: &str, self_name: Option<&str>) -> Result<Vec<Level>, BusError> {
    let bad = |reason: &'static str| BusError::Pattern {
        pattern: pattern.to_owned(),
        reason,
    };
    let mut levels = Vec::new();
    for level in pattern.split('/') {
        let inner = level.strip_prefix('{').and_then(|l| l.strip_suffix('}'));
        let parsed = match (inner, self_name) {
            (Some("self"), Some(own)) => Level::Literal(own.to_owned()),
            (Some(name), _) => {
                if name.is_empty() || name.contains(['{', '}']) || validate_name(name).is_err() {
                    return Err(bad("a placeholder needs a plain name, like `{plugin}`"));
                }
                if levels.contains(&Level::Capture(name.to_owned())) {
                    return Err(bad("the same placeholder name appears twice"));
                }
                Level::Capture(name.to_owned())
            }
            (None, _) => {
                if level.contains(['{', '}']) {
                    return Err(bad("a placeholder must fill a whole level"));
                }
                if validate_name(level).is_err() {
                    return Err(bad("empty level, wildcard or NUL in a literal level"));
                }
                Level::Literal(level.to_owned())
            }
        };
        levels.push(parsed);
    }
    Ok(levels)
}

fn filter_of(levels: &[Level]) -> String {
    let parts: Vec<&str> = levels
        .iter()
        .map(|l| match l {
            Level::Literal(s) => s.as_str(),
            Level::Capture(_) => "+",
        })
        .collect();
    parts.join("/")
}

/// The MQTT subscription filter of a pattern: every `{name}` becomes `+`.
pub fn filter(pattern: &str) -> Result<String, BusError> {
    Ok(filter_of(&parse_pattern(pattern, None)?))
}

/// A table of routes, each a pattern and a key (e.g. an enum of endpoints).
#[derive(Debug, Clone)]
pub struct Router<K> {
    self_name: Option<String>,
    routes: Vec<Route<K>>,
}

impl<K> Default for Router<K> {
    fn default() -> Self {
        Router {
            self_name: None,
            routes: Vec::new(),
        }
    }
}

impl<K> Router<K> {
    /// An empty router where `{self}` is an ordinary placeholder.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty router where `{self}` means the plugin's own name `self_name`.
    pub fn for_plugin(self_name: &str) -> Result<Self, BusError> {
        validate_name(self_name)?;
        Ok(Router {
            self_name: Some(self_name.to_owned()),
            routes: Vec::new(),
        })
    }

    /// Adds a route. Routes are tried in the order they were added; the first match wins.
    /// Returns the MQTT filter of the route.
    pub fn add(&mut self, pattern: &str, key: K) -> Result<String, BusError> {
        let levels = parse_pattern(pattern, self.self_name.as_deref())?;
        let filter = filter_of(&levels);
        self.routes.push(Route {
            pattern: pattern.to_owned(),
            filter: filter.clone(),
            levels,
            key,
        });
        Ok(filter)
    }

    /// The key and captures of the first route matching the concrete `topic`. Placeholders
    /// never match an empty level.
    pub fn route(&self, topic: &str) -> Option<(&K, Captures)> {
        let levels: Vec<&str> = topic.split('/').collect();
        self.routes.iter().find_map(|route| {
            if route.levels.len() != levels.len() {
                return None;
            }
            let mut captures = Captures::default();
            for (want, got) in route.levels.iter().zip(&levels) {
                match want {
                    Level::Literal(l) if l == got => {}
                    Level::Capture(name) if !got.is_empty() => {
                        captures.pairs.push((name.clone(), (*got).to_owned()));
                    }
                    _ => return None,
                }
            }
            Some((&route.key, captures))
        })
    }

    /// The distinct MQTT filters of all routes, in the order they were added: what to
    /// subscribe to, and what `get-subscriptions` answers.
    pub fn filters(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(self.routes.len());
        for route in &self.routes {
            if !out.contains(&route.filter) {
                out.push(route.filter.clone());
            }
        }
        out
    }

    /// Every route as `(pattern as written, filter, key)`.
    pub fn routes(&self) -> impl Iterator<Item = (&str, &str, &K)> {
        self.routes
            .iter()
            .map(|r| (r.pattern.as_str(), r.filter.as_str(), &r.key))
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether no route was added.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum Ep {
        Voltage,
        Connected,
        Notify,
        Any,
    }

    fn router() -> Result<Router<Ep>, BusError> {
        let mut r = Router::for_plugin("dropbot")?;
        assert_eq!(
            r.add("microdrop/put/{self}/voltage", Ep::Voltage)?,
            "microdrop/put/dropbot/voltage"
        );
        r.add("microdrop/{plugin}/signal/connected", Ep::Connected)?;
        r.add("microdrop/{sender}/notify/{self}/{topic}", Ep::Notify)?;
        r.add("microdrop/{plugin}/signal/connected", Ep::Any)?;
        Ok(r)
    }

    #[test]
    fn self_is_substituted_and_filters_use_plus() -> Result<(), BusError> {
        let r = router()?;
        assert_eq!(
            r.filters(),
            [
                "microdrop/put/dropbot/voltage",
                "microdrop/+/signal/connected",
                "microdrop/+/notify/dropbot/+",
            ]
        );
        assert_eq!(r.len(), 4);
        assert_eq!(filter("microdrop/{a}/state/{b}")?, "microdrop/+/state/+");
        assert_eq!(filter("microdrop/put/{self}/x")?, "microdrop/put/+/x");
        Ok(())
    }

    #[test]
    fn routes_with_captures() -> Result<(), BusError> {
        let r = router()?;
        let (key, caps) = r
            .route("microdrop/put/dropbot/voltage")
            .ok_or(BusError::Closed)?;
        assert_eq!(*key, Ep::Voltage);
        assert!(caps.is_empty());

        let (key, caps) = r
            .route("microdrop/device-model/signal/connected")
            .ok_or(BusError::Closed)?;
        assert_eq!(*key, Ep::Connected, "first match wins");
        assert_eq!(caps.get("plugin"), Some("device-model"));
        assert_eq!(caps.get("nope"), None);

        let (key, caps) = r
            .route("microdrop/ui/notify/dropbot/get-schema")
            .ok_or(BusError::Closed)?;
        assert_eq!(*key, Ep::Notify);
        let pairs: Vec<_> = caps.iter().collect();
        assert_eq!(pairs, [("sender", "ui"), ("topic", "get-schema")]);
        Ok(())
    }

    #[test]
    fn non_matching_topics() -> Result<(), BusError> {
        let r = router()?;
        for t in [
            "",
            "microdrop/put/other/voltage",
            "microdrop/put/dropbot/voltage/x",
            "microdrop/put/dropbot",
            "microdrop//signal/connected",
            "microdrop/ui/notify/other/x",
        ] {
            assert!(r.route(t).is_none(), "routed {t:?}");
        }
        Ok(())
    }

    #[test]
    fn self_without_plugin_is_a_capture() -> Result<(), BusError> {
        let mut r = Router::new();
        r.add("microdrop/put/{self}/x", 1)?;
        let (_, caps) = r.route("microdrop/put/abc/x").ok_or(BusError::Closed)?;
        assert_eq!(caps.get("self"), Some("abc"));
        Ok(())
    }

    #[test]
    fn rejects_bad_patterns() {
        let mut r: Router<()> = Router::new();
        for bad in [
            "",
            "a//b",
            "a/+/b",
            "a/#",
            "a/{}/b",
            "a/{x}{y}",
            "a/x{y}",
            "a/{x/b}",
            "a/{x}/{x}",
            "a/{+}",
        ] {
            assert!(r.add(bad, ()).is_err(), "accepted {bad:?}");
        }
        assert!(r.is_empty());
        assert!(Router::<()>::for_plugin("a/b").is_err());
    }
}
