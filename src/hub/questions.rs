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
