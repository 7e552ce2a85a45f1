//! MicroDrop 3's topic grammar: a typed [`Topic`] with builders, `Display` and `FromStr`.
//!
//! Every topic starts with the app name `microdrop`. Names (plugins, properties, actions) are
//! single MQTT levels: non-empty, without `/`, the wildcards `+` and `#`, or NUL.

use std::fmt;
use std::str::FromStr;

use super::error::BusError;

/// First level of every MicroDrop topic.
pub const APP: &str = "microdrop";

/// Second-level keywords that cannot be sender names (they would make a topic ambiguous).
const RESERVED_SENDERS: [&str; 3] = ["put", "trigger", "status"];

/// One MicroDrop topic, by kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `microdrop/put/<receiver>/<property>`: a request to change a property.
    Put {
        /// Plugin that owns the property.
        receiver: String,
        /// Property name.
        property: String,
    },
    /// `microdrop/trigger/<receiver>/<action>`: a request to run an action.
    Trigger {
        /// Plugin that runs the action.
        receiver: String,
        /// Action name.
        action: String,
    },
    /// `microdrop/<sender>/state/<property>`: a property's current value (retained).
    State {
        /// Owner of the property.
        sender: String,
        /// Property name.
        property: String,
    },
    /// `microdrop/<sender>/error/<property>`: a property's error.
    Error {
        /// Owner of the property.
        sender: String,
        /// Property name.
        property: String,
    },
    /// `microdrop/<sender>/notify/<receiver>/<topic>`: a reply to one client.
    Notify {
        /// The replier.
        sender: String,
        /// The client that asked (its `__head__.plugin_name`).
        receiver: String,
        /// The property or action the reply is about.
        topic: String,
    },
    /// `microdrop/<sender>/signal/<topic>`: a broadcast event.
    Signal {
        /// The sender.
        sender: String,
        /// The event name.
        topic: String,
    },
    /// `microdrop/status/<sender>`: a plugin's status.
    Status {
        /// The sender.
        sender: String,
    },
}

/// Checks that `name` can be one topic level: non-empty, no `/`, `+`, `#` or NUL.
pub fn validate_name(name: &str) -> Result<(), BusError> {
    let reason = if name.is_empty() {
        "empty name"
    } else if name.contains('/') {
        "a name cannot contain `/`"
    } else if name.contains(['+', '#']) {
        "a name cannot contain the wildcards `+` or `#`"
    } else if name.contains('\0') {
        "a name cannot contain NUL"
    } else {
        return Ok(());
    };
    Err(BusError::Topic {
        topic: name.to_owned(),
        reason,
    })
}

fn validate_sender(name: &str) -> Result<(), BusError> {
    validate_name(name)?;
    if RESERVED_SENDERS.contains(&name) {
        return Err(BusError::Topic {
            topic: name.to_owned(),
            reason: "`put`, `trigger` and `status` are reserved and cannot be sender names",
        });
    }
    Ok(())
}

impl Topic {
    /// `microdrop/put/<receiver>/<property>`.
    pub fn put(receiver: &str, property: &str) -> Result<Self, BusError> {
        validate_name(receiver)?;
        validate_name(property)?;
        Ok(Topic::Put {
            receiver: receiver.to_owned(),
            property: property.to_owned(),
        })
    }

    /// `microdrop/trigger/<receiver>/<action>`.
    pub fn trigger(receiver: &str, action: &str) -> Result<Self, BusError> {
        validate_name(receiver)?;
        validate_name(action)?;
        Ok(Topic::Trigger {
            receiver: receiver.to_owned(),
            action: action.to_owned(),
        })
    }

    /// `microdrop/<sender>/state/<property>`.
    pub fn state(sender: &str, property: &str) -> Result<Self, BusError> {
        validate_sender(sender)?;
        validate_name(property)?;
        Ok(Topic::State {
            sender: sender.to_owned(),
            property: property.to_owned(),
        })
    }

    /// `microdrop/<sender>/error/<property>`.
    pub fn error(sender: &str, property: &str) -> Result<Self, BusError> {
        validate_sender(sender)?;
        validate_name(property)?;
        Ok(Topic::Error {
            sender: sender.to_owned(),
            property: property.to_owned(),
        })
    }

    /// `microdrop/<sender>/notify/<receiver>/<topic>`.
    pub fn notify(sender: &str, receiver: &str, topic: &str) -> Result<Self, BusError> {
        validate_sender(sender)?;
        validate_name(receiver)?;
        validate_name(topic)?;
        Ok(Topic::Notify {
            sender: sender.to_owned(),
            receiver: receiver.to_owned(),
            topic: topic.to_owned(),
        })
    }

    /// `microdrop/<sender>/signal/<topic>`.
    pub fn signal(sender: &str, topic: &str) -> Result<Self, BusError> {
        validate_sender(sender)?;
        validate_name(topic)?;
        Ok(Topic::Signal {
            sender: sender.to_owned(),
            topic: topic.to_owned(),
        })
    }

    /// `microdrop/status/<sender>`.
    pub fn status(sender: &str) -> Result<Self, BusError> {
        validate_sender(sender)?;
        Ok(Topic::Status {
            sender: sender.to_owned(),
        })
    }

    /// Whether messages on this topic are published retained (only `state`).
    pub fn is_retained(&self) -> bool {
        matches!(self, Topic::State { .. })
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Put { receiver, property } => write!(f, "{APP}/put/{receiver}/{property}"),
            Topic::Trigger { receiver, action } => write!(f, "{APP}/trigger/{receiver}/{action}"),
            Topic::State { sender, property } => write!(f, "{APP}/{sender}/state/{property}"),
            Topic::Error { sender, property } => write!(f, "{APP}/{sender}/error/{property}"),
            Topic::Notify {
                sender,
                receiver,
                topic,
            } => write!(f, "{APP}/{sender}/notify/{receiver}/{topic}"),
            Topic::Signal { sender, topic } => write!(f, "{APP}/{sender}/signal/{topic}"),
            Topic::Status { sender } => write!(f, "{APP}/status/{sender}"),
        }
    }
}

impl FromStr for Topic {
    type Err = BusError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &'static str| BusError::Topic {
            topic: s.to_owned(),
            reason,
        };
        let levels: Vec<&str> = s.split('/').collect();
        let Some((&app, rest)) = levels.split_first() else {
            return Err(bad("empty topic"));
        };
        if app != APP {
            return Err(bad("topic does not start with `microdrop/`"));
        }
        // Check every level first so that errors name the whole topic.
        for level in rest {
            if validate_name(level).is_err() {
                return Err(bad(
                    "empty level, wildcard or NUL in a level (names must be plain)",
                ));
            }
        }
        let parsed = match rest {
            ["put", r, p] => Topic::put(r, p),
            ["trigger", r, a] => Topic::trigger(r, a),
            ["status", s] => Topic::status(s),
            [s, "state", p] => Topic::state(s, p),
            [s, "error", p] => Topic::error(s, p),
            [s, "notify", r, t] => Topic::notify(s, r, t),
            [s, "signal", t] => Topic::signal(s, t),
            _ => {
                return Err(bad(
                    "not a put, trigger, state, error, notify, signal or status topic",
                ))
            }
        };
        parsed.map_err(|_| bad("reserved word used as a sender name"))
    }
}

impl TryFrom<&str> for Topic {
    type Error = BusError;

    fn try_from(s: &str) -> Result<Self, BusError> {
        s.parse()
    }
}

/// Whether the MQTT topic `topic` matches the subscription `filter` (`+` one level, `#` the
/// rest). Never panics, whatever the input; topics starting with `$` match no wildcard.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    let mut topic_levels = topic.split('/');
    let mut first = true;
    for f in filter.split('/') {
        let wildcard = f == "#" || f == "+";
        if first && wildcard && topic.starts_with('$') {
            return false;
        }
        first = false;
        if f == "#" {
            return true;
        }
        match topic_levels.next() {
            Some(t) if f == "+" || f == t => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

#[cfg(test)]
#[path = "topics_tests.rs"]
mod tests;
