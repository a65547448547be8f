//! What a backend is asked when it decides connects and joins, and what it answers: plain
//! data shared by the deciders, the backplane that carries questions between instances, and
//! the doors.

use serde::{Deserialize, Serialize};

/// What a backend may decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecisionKind {
    Connect,
    Join,
}

/// A connecting client, as a decider sees it. It carries the client's credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectQuestion {
    pub socket_id: String,
    pub namespace: String,
    pub auth_json: String,
    pub headers: Vec<(String, String)>,
    pub client_address: String,
    pub transport: String,
    pub jwt_claims_json: Option<String>,
}

/// A socket asking to join a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinQuestion {
    pub socket_id: String,
    pub user_id: Option<String>,
    pub namespace: String,
    pub room: String,
    pub data_json: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Question {
    Connect(ConnectQuestion),
    Join(JoinQuestion),
}

impl Question {
    pub(super) fn kind(&self) -> DecisionKind {
        match self {
            Question::Connect(_) => DecisionKind::Connect,
            Question::Join(_) => DecisionKind::Join,
        }
    }

    pub(super) fn namespace(&self) -> &str {
        match self {
            Question::Connect(q) => &q.namespace,
            Question::Join(q) => &q.namespace,
        }
    }
}

/// A decider's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    Allow { user_id: Option<String>, rooms: Vec<String>, data_json: String },
    Deny { code: String, message: String, data_json: String },
}

/// Longest deny code a client or a log line receives, in bytes.
pub const MAX_DENY_CODE: usize = 64;
/// Longest deny message a client or a log line receives, in bytes.
pub const MAX_DENY_MESSAGE: usize = 1024;

impl Answer {
    /// A deny as clients and logs get it: the backend's words are kept, but bounded (a
    /// decider must not be able to make the bridge write megabytes per refused client),
    /// and never empty (an empty `connect_error` tells the user nothing). The deny's
    /// data is dropped: the client cannot receive it (see the README on what a deny
    /// carries). An allow is checked where it is used, against the connect's limits.
    pub fn bounded(self) -> Answer {
        match self {
            Answer::Deny { code, message, .. } => Answer::Deny {
                code: if code.is_empty() { "denied".into() } else { truncated(code, MAX_DENY_CODE) },
                message: if message.is_empty() { "not allowed".into() } else { truncated(message, MAX_DENY_MESSAGE) },
                data_json: String::new(),
            },
            allow => allow,
        }
    }
}

fn truncated(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Why no decider answered. Each becomes the refusal's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Undecided {
    #[error("no backend is subscribed to decide")]
    NoDecider,
    #[error("the backend did not decide in time")]
    Timeout,
    #[error("the backend deciding went away")]
    DeciderGone,
    #[error("the backend is not keeping up with decisions")]
    Overloaded,
    #[error("the backend's decision was malformed")]
    Malformed,
}

impl Undecided {
    /// The code the client receives.
    pub fn code(self) -> &'static str {
        match self {
            Undecided::NoDecider => "no_decider",
            Undecided::Timeout => "decision_timeout",
            Undecided::DeciderGone => "decider_gone",
            Undecided::Overloaded => "decider_overloaded",
            Undecided::Malformed => "decision_malformed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deny_is_bounded_and_never_empty() {
        let deny = |code: &str, message: &str| Answer::Deny {
            code: code.into(),
            message: message.into(),
            data_json: "{\"x\":1}".into(),
        };
        let Answer::Deny { code, message, data_json } = deny("", "").bounded() else { panic!("deny expected") };
        assert_eq!((code.as_str(), message.as_str(), data_json.as_str()), ("denied", "not allowed", ""));
        let long = "é".repeat(2000);
        let Answer::Deny { code, message, .. } = deny(&long, &long).bounded() else { panic!("deny expected") };
        assert_eq!(code.len(), MAX_DENY_CODE);
        assert_eq!(message.len(), MAX_DENY_MESSAGE);
        assert!(code.chars().all(|c| c == 'é'));
        let allow = Answer::Allow { user_id: None, rooms: vec![], data_json: "{}".into() };
        assert_eq!(allow.clone().bounded(), allow);
    }
}
