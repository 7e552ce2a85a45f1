//! The board layer's errors, in two levels: [`LinkError`] (the link broke, timed out or could
//! not be opened) and [`BoardError`] (the board refused, answered nonsense, or the request was
//! wrong before it was sent), which wraps a `LinkError` with `#[from]`.

use std::time::Duration;

use firmware_protocol::{EncodeError, RpcError, TableError};
use thiserror::Error;

use super::discovery::DiscoveryError;

/// The link to the board broke, timed out, or was never made.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// The port is gone (unplugged, EOF, I/O error) or stopped answering; nothing more can be
    /// sent on this link. Reconnect (the supervisor does so by itself).
    #[error("the link to the board is gone: {reason}")]
    Gone {
        /// What happened, e.g. "end of file: the board was unplugged".
        reason: String,
    },
    /// No answer in time. The request may or may not have reached the board.
    #[error("no reply to `{command}` within {after:?}: the board is busy, stalled or unplugged")]
    Timeout {
        /// The command that got no reply.
        command: &'static str,
        /// How long it waited.
        after: Duration,
    },
    /// The port could not be opened.
    #[error("cannot open {path}: {reason}")]
    Open {
        /// The port's path.
        path: String,
        /// Why, with a hint.
        reason: String,
    },
    /// This host closed the link on purpose (shutdown, supervisor stop).
    #[error("the link to the board was closed by this program")]
    Closed,
    /// A request too large to frame.
    #[error("request cannot be framed: {0}")]
    Encode(#[from] EncodeError),
}

impl LinkError {
    /// A timeout of a resync probe is the timeout of the request it was sent for (which then
    /// was not sent).
    pub(crate) fn for_command(self, command: &'static str) -> Self {
        match self {
            LinkError::Timeout { after, .. } => LinkError::Timeout { command, after },
            other => other,
        }
    }
}

/// A failed board operation.
#[derive(Debug, Error, Clone)]
pub enum BoardError {
    /// The link broke or timed out.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The board answered and said no.
    #[error("the board refused `{command}`: {detail}")]
    Refused {
        /// The command refused.
        command: &'static str,
        /// What was asked and why it may have been refused.
        detail: String,
    },
    /// The board answered with bytes that do not decode as this command's reply.
    #[error("{}", invalid_reply(command, source))]
    InvalidReply {
        /// The command.
        command: &'static str,
        /// What was wrong with the reply.
        source: RpcError,
    },
    /// The board answered with a protobuf message that does not decode.
    #[error("the board's reply to `{command}` is not a valid message: {detail}")]
    BadMessage {
        /// The command.
        command: &'static str,
        /// The decoder's complaint.
        detail: String,
    },
    /// A value outside what the board (or its configuration) allows; nothing was sent.
    #[error(
        "{what} = {value} is out of range (allowed: {allowed}); nothing was sent to the board"
    )]
    OutOfRange {
        /// The field or argument.
        what: String,
        /// The value asked for.
        value: f64,
        /// The allowed range, with units.
        allowed: String,
    },
    /// The firmware does not offer this feature.
    #[error("this firmware does not support `{command}`: {detail}")]
    Unsupported {
        /// The command.
        command: &'static str,
        /// What the board answered.
        detail: String,
    },
    /// No command table for this firmware, or the table lacks a command.
    #[error(transparent)]
    NoTable(#[from] TableError),
    /// The device answered the handshake but is not a DropBot.
    #[error("the device identifies as `{identity}`, not as a DropBot (`dropbot::<version>`): wrong port or wrong firmware")]
    WrongFirmware {
        /// The identity it sent.
        identity: String,
    },
    /// No board could be found or chosen.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The board supervisor's task ended without putting the board in the safe state (it
    /// panicked or was cancelled).
    #[error("the board supervisor failed ({0}): the board's safe state was not confirmed")]
    SupervisorFailed(String),
}

impl BoardError {
    /// Whether the link itself failed (as opposed to the board answering badly).
    pub fn is_link(&self) -> bool {
        matches!(self, BoardError::Link(_))
    }

    /// Whether the link is gone for good (reconnect needed).
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            BoardError::Link(LinkError::Gone { .. } | LinkError::Closed)
        )
    }
}

fn invalid_reply(command: &str, source: &RpcError) -> String {
    match source {
        RpcError::ReplyLength { got: 0, .. } => format!(
            "the board sent an empty reply to `{command}`: this firmware does not know the \
             command, so the command table does not match it (supply the right one with \
             --command-table FILE)"
        ),
        other => format!("the board's reply to `{command}` is invalid: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_reply_points_at_the_command_table() {
        let e = BoardError::InvalidReply {
            command: "uuid",
            source: RpcError::ReplyLength {
                ty: "u32",
                expected: 4,
                got: 0,
            },
        };
        let text = e.to_string();
        assert!(text.contains("command table"), "{text}");
        assert!(text.contains("uuid"), "{text}");
        let e = BoardError::InvalidReply {
            command: "uuid",
            source: RpcError::NotUtf8,
        };
        assert!(!e.to_string().contains("command table"));
    }

    #[test]
    fn link_errors_are_classified() {
        let gone: BoardError = LinkError::Gone {
            reason: "eof".into(),
        }
        .into();
        assert!(gone.is_link() && gone.is_gone());
        let timeout: BoardError = LinkError::Timeout {
            command: "halt",
            after: Duration::from_millis(5),
        }
        .into();
        assert!(timeout.is_link() && !timeout.is_gone());
        assert!(timeout.to_string().contains("halt"));
    }
}
