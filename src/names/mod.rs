//! Names and their rules, in one place: what a room, event, group, user id, namespace or
//! socket id may be, and how many of them a request may list. The hub enforces them,
//! configuration validation checks settings with them, and the REST door's OpenAPI
//! document states them as JSON Schema patterns built from the same constants, so no door
//! can drift from what the hub accepts.

pub mod pattern;

/// Prefix of the internal per-user rooms. Clients can neither join them nor be granted
/// them by a token; the backend reaches them with a user target.
pub const USER_ROOM_PREFIX: &str = "user:";
/// Reserved for per-socket rooms: nobody may name a room with it (a backend addressing
/// one socket uses a socket target).
pub const SOCKET_ROOM_PREFIX: &str = "socket:";
/// Longest room, event or group name accepted, in characters.
pub const MAX_NAME_LEN: usize = 256;
/// Longest user id, in characters.
pub const MAX_USER_ID_LEN: usize = 128;
/// Longest namespace name, in characters.
pub const MAX_NAMESPACE_LEN: usize = 128;
/// Most rooms or sockets named in one request.
pub const MAX_LIST_LEN: usize = 256;
/// Event names the Socket.IO client reserves for itself; a push under one of them would
/// never reach application code.
pub const RESERVED_EVENTS: &[&str] =
    &["connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"];
/// A Socket.IO socket id, as JSON Schema states it.
pub const SOCKET_ID_PATTERN: &str = r"^[A-Za-z0-9_-]{16}$";

/// Control characters (`char::is_control`: U+0000–U+001F and U+007F–U+009F) as a regex
/// character class body.
const CONTROL_CLASS: &str = r"\x00-\x1f\x7f-\x9f";

/// A room or user id with no control characters, as JSON Schema states it.
pub fn printable_pattern() -> String {
    format!("^[^{CONTROL_CLASS}]*$")
}

/// A room name callers may use: printable, and neither internal prefix.
pub fn room_pattern() -> String {
    format!("^(?!{USER_ROOM_PREFIX}|{SOCKET_ROOM_PREFIX})[^{CONTROL_CLASS}]*$")
}

/// An event name callers may push: printable, and none of the reserved names.
pub fn event_pattern() -> String {
    format!("^(?!({})$)[^{CONTROL_CLASS}]*$", RESERVED_EVENTS.join("|"))
}

pub fn is_internal_room(room: &str) -> bool {
    room.starts_with(USER_ROOM_PREFIX) || room.starts_with(SOCKET_ROOM_PREFIX)
}

pub fn user_room(user_id: &str) -> String {
    format!("{USER_ROOM_PREFIX}{user_id}")
}

/// What is wrong with a name. The message is written to follow the field it concerns
/// ("room: must not be empty").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("is {chars} characters, over the limit of {max}")]
    TooLong { chars: usize, max: usize },
    #[error("must not contain control characters")]
    ControlCharacter,
    #[error(
        "{0:?}: the {USER_ROOM_PREFIX:?} and {SOCKET_ROOM_PREFIX:?} prefixes are reserved; target the user or socket instead"
    )]
    InternalRoom(String),
    #[error("{0:?} is reserved by the Socket.IO client")]
    ReservedEvent(String),
    #[error("must be 1 to {MAX_USER_ID_LEN} characters of printable text")]
    UserId,
    #[error("{0:?} must start with '/' and be at most {MAX_NAMESPACE_LEN} characters")]
    Namespace(String),
}

/// A room, event or group name: 1 to `MAX_NAME_LEN` printable characters.
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_LEN {
        return Err(NameError::TooLong { chars, max: MAX_NAME_LEN });
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter);
    }
    Ok(())
}

/// A room the backend or a token may name: a name, and not internal.
pub fn check_room(room: &str) -> Result<(), NameError> {
    check_name(room)?;
    if is_internal_room(room) {
        return Err(NameError::InternalRoom(room.to_owned()));
    }
    Ok(())
}

/// An event the backend may push: a name, and not reserved by the client.
pub fn check_event(event: &str) -> Result<(), NameError> {
    check_name(event)?;
    if RESERVED_EVENTS.contains(&event) {
        return Err(NameError::ReservedEvent(event.to_owned()));
    }
    Ok(())
}

/// A user id: 1 to `MAX_USER_ID_LEN` printable characters.
pub fn check_user_id(id: &str) -> Result<(), NameError> {
    if id.is_empty() || id.chars().count() > MAX_USER_ID_LEN || id.chars().any(char::is_control) {
        return Err(NameError::UserId);
    }
    Ok(())
}

/// A namespace setting: starts with '/', at most `MAX_NAMESPACE_LEN` characters.
pub fn check_namespace(ns: &str) -> Result<(), NameError> {
    if !ns.starts_with('/') || ns.chars().count() > MAX_NAMESPACE_LEN {
        return Err(NameError::Namespace(ns.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_state_the_same_rules_as_the_checks() {
        assert_eq!(room_pattern(), r"^(?!user:|socket:)[^\x00-\x1f\x7f-\x9f]*$");
        assert!(event_pattern().starts_with("^(?!(connect|connect_error|disconnect|"));
        assert!(check_room("user:x").is_err() && check_room("socket:x").is_err() && check_room("team").is_ok());
        assert!(check_event("connect").is_err() && check_event("connected").is_ok());
        assert!(check_name(&"x".repeat(MAX_NAME_LEN)).is_ok());
        assert!(check_name(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(check_name("a\u{85}b").is_err(), "C1 controls are control characters too");
        assert!(check_user_id(&"é".repeat(MAX_USER_ID_LEN)).is_ok(), "characters, not bytes");
    }
}
