//! How `kvctl` prints: plain text for people, one JSON document per command with `--json`.
//!
//! Keys and values are bytes. In JSON a valid UTF-8 byte string becomes a string field (`"value"`)
//! and anything else a base64 field (`"value_base64"`), so no byte is ever lost or mangled.

use std::io::Write;

use raftkv_client::{Member, MemberRole, MemberState, Role, StatusResponse};
use serde_json::{Map, Value, json};

/// Where and how results and errors are printed.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    json: bool,
}

impl Output {
    /// Text output, or JSON when `json` is set.
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    /// Whether `--json` was given.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Prints `text` (a line for people) or `value` (with `--json`) on stdout.
    pub fn result(&self, text: impl FnOnce() -> String, value: impl FnOnce() -> Value) {
        if self.json {
            println!("{}", value());
        } else {
            println!("{}", text());
        }
    }

    /// Prints a JSON document on stdout (only meaningful with `--json`).
    pub fn json(&self, value: &Value) {
        println!("{value}");
    }

    /// Writes raw bytes followed by a newline to stdout (`kvctl get`).
    pub fn raw(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(bytes)?;
        stdout.write_all(b"\n")?;
        stdout.flush()
    }

    /// A note for people on stderr; suppressed with `--json` so stdout stays one document.
    pub fn note(&self, text: &str) {
        if !self.json {
            eprintln!("{text}");
        }
    }

    /// Reports a failed command: on stderr as text, or as `{"error": ...}` on stdout with `--json`.
    pub fn error(&self, kind: &str, message: &str) {
        if self.json {
            println!(
                "{}",
                json!({ "error": { "kind": kind, "message": message } })
            );
        } else {
            eprintln!("kvctl: {message}");
        }
    }
}

/// Adds `bytes` to `object` as `name` (UTF-8) or `name_base64` (anything else).
pub fn put_bytes(object: &mut Map<String, Value>, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            object.insert(name.to_owned(), Value::String(text.to_owned()));
        }
        Err(_) => {
            object.insert(format!("{name}_base64"), Value::String(base64(bytes)));
        }
    }
}

/// Standard base64 with padding (RFC 4648 §4); small enough not to need a crate.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The lower-case name of a node role, as the Raft core spells it.
pub fn role_name(role: i32) -> &'static str {
    match Role::try_from(role) {
        Ok(Role::Follower) => "follower",
        Ok(Role::PreCandidate) => "pre-candidate",
        Ok(Role::Candidate) => "candidate",
        Ok(Role::Leader) => "leader",
        Err(_) => "unknown",
    }
}

/// The lower-case name of where a node stands as a member (`Cluster.Status.member_state`).
pub fn member_state_name(state: i32) -> &'static str {
    match MemberState::try_from(state) {
        Ok(MemberState::Unknown) | Err(_) => "unknown",
        Ok(MemberState::Loading) => "loading",
        Ok(MemberState::Fresh) => "fresh",
        Ok(MemberState::WaitingToBeAdded) => "waiting-to-be-added",
        Ok(MemberState::CatchingUp) => "catching-up",
        Ok(MemberState::Learner) => "learner",
        Ok(MemberState::Voter) => "voter",
        Ok(MemberState::Removed) => "removed",
    }
}

/// The lower-case name of a member role.
pub fn member_role_name(role: i32) -> &'static str {
    match MemberRole::try_from(role) {
        Ok(MemberRole::Voter) => "voter",
        Ok(MemberRole::Learner) => "learner",
        Err(_) => "unknown",
    }
}

/// A member as JSON.
pub fn member_json(member: &Member, leader_id: u64) -> Value {
    json!({
        "id": member.id,
        "peer_addr": member.peer_addr,
        "client_addr": member.client_addr,
        "role": member_role_name(member.role),
        "match_index": member.match_index,
        "healthy": member.healthy,
        "leader": member.id == leader_id && leader_id != 0,
    })
}

/// A status as JSON.
pub fn status_json(status: &StatusResponse) -> Value {
    json!({
        "node_id": status.node_id,
        "role": role_name(status.role),
        "term": status.term,
        "leader_id": status.leader_id,
        "leader_client_addr": status.leader_client_addr,
        "commit_index": status.commit_index,
        "applied_index": status.applied_index,
        "cluster_id": status.cluster_id,
        "member_state": member_state_name(status.member_state),
        "last_log_index": status.last_log_index,
        "last_log_term": status.last_log_term,
        "catch_up_index": status.catch_up_index,
        "members": status.members.iter().map(|m| member_json(m, status.leader_id)).collect::<Vec<_>>(),
    })
}

/// The status as people read it: a summary line and a table of members, leader marked `*`.
pub fn status_text(status: &StatusResponse) -> String {
    let leader = if status.leader_id == 0 {
        "none known".to_owned()
    } else {
        format!("node {} ({})", status.leader_id, status.leader_client_addr)
    };
    let cluster_id = if status.cluster_id.is_empty() {
        "-"
    } else {
        &status.cluster_id
    };
    let catching_up = if status.catch_up_index > 0 {
        format!(" until index {}", status.catch_up_index)
    } else {
        String::new()
    };
    let mut text = format!(
        "cluster {cluster_id}  leader {leader}  term {}\nanswered by node {} ({}, {}{catching_up})  last log {}  commit {}  applied {}\n\n",
        status.term,
        status.node_id,
        role_name(status.role),
        member_state_name(status.member_state),
        status.last_log_index,
        status.commit_index,
        status.applied_index,
    );
    text.push_str(&members_text(&status.members, status.leader_id));
    text
}

/// A table of members; the leader's row is marked with `*`.
pub fn members_text(members: &[Member], leader_id: u64) -> String {
    let header = [
        "",
        "ID",
        "ROLE",
        "PEER ADDR",
        "CLIENT ADDR",
        "MATCH",
        "HEALTH",
    ];
    let rows: Vec<[String; 7]> = members
        .iter()
        .map(|m| {
            let is_leader = leader_id != 0 && m.id == leader_id;
            [
                if is_leader { "*" } else { "" }.to_owned(),
                m.id.to_string(),
                if is_leader {
                    format!("{} (leader)", member_role_name(m.role))
                } else {
                    member_role_name(m.role).to_owned()
                },
                m.peer_addr.clone(),
                m.client_addr.clone(),
                m.match_index.to_string(),
                if m.healthy { "healthy" } else { "unhealthy" }.to_owned(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut text = String::new();
    let mut line = |cells: &[&str]| {
        let mut row = String::new();
        for (cell, width) in cells.iter().zip(widths) {
            row.push_str(&format!("{cell:<width$}  "));
        }
        text.push_str(row.trim_end());
        text.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
    if members.is_empty() {
        text.push_str("(no members)\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn bytes_fields_keep_binary() {
        let mut object = Map::new();
        put_bytes(&mut object, "value", b"hi");
        put_bytes(&mut object, "key", &[0xff, 0x00]);
        assert_eq!(object["value"], "hi");
        assert_eq!(object["key_base64"], "/wA=");
    }

    #[test]
    fn table_marks_the_leader() {
        let member = |id, role: MemberRole| Member {
            id,
            peer_addr: format!("127.0.0.1:710{id}"),
            client_addr: format!("127.0.0.1:700{id}"),
            role: role.into(),
            match_index: 7,
            healthy: true,
        };
        let text = members_text(
            &[member(1, MemberRole::Voter), member(2, MemberRole::Learner)],
            1,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with('*'), "{text}");
        assert!(lines[1].contains("voter (leader)"), "{text}");
        assert!(lines[2].contains("learner"), "{text}");
        assert!(lines[2].contains("127.0.0.1:7002"), "{text}");
    }
}
