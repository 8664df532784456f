//! The one-shot commands: put, get, delete, scan, cas, status, member, transfer-leader.

use std::io::Read;
use std::time::Duration;

use raftkv_client::tls::TlsConfig;
use raftkv_client::{Bytes, Client, ClientOptions, Consistency};
use serde_json::{Map, Value, json};

use crate::cli::{Command, MemberCommand};
use crate::exit::{Exit, Failure};
use crate::output::{self, Output};

/// Connects a client with the global flags.
pub async fn connect(
    endpoints: &[String],
    timeout: Duration,
    tls: Option<&TlsConfig>,
) -> Result<Client, Failure> {
    let defaults = ClientOptions::default();
    let options = ClientOptions {
        timeout,
        tls: tls.cloned(),
        // One hung node must not use up a short overall budget.
        attempt_timeout: defaults.attempt_timeout.min(timeout),
        connect_timeout: defaults.connect_timeout.min(timeout),
        ..defaults
    };
    Ok(Client::connect(endpoints.to_vec(), options).await?)
}

/// Runs one of the one-shot commands.
pub async fn run(
    endpoints: &[String],
    timeout: Duration,
    tls: Option<&TlsConfig>,
    command: Command,
    out: &Output,
) -> Result<Exit, Failure> {
    let client = connect(endpoints, timeout, tls).await?;
    match command {
        Command::Put { key, value } => {
            let value = match value {
                Some(value) => Bytes::from(value),
                None => read_stdin()?,
            };
            let version = client.put(key, value).await?;
            out.result(
                || format!("OK (version {version})"),
                || json!({ "version": version }),
            );
            Ok(Exit::Success)
        }
        Command::Get { key, consistency } => {
            let found = client.get(key.clone(), consistency.into()).await?;
            match found {
                Some(v) if out.is_json() => {
                    let mut object = Map::new();
                    object.insert("found".into(), Value::Bool(true));
                    output::put_bytes(&mut object, "value", &v.value);
                    object.insert("version".into(), v.version.into());
                    out.json(&Value::Object(object));
                    Ok(Exit::Success)
                }
                Some(v) => {
                    out.raw(&v.value)
                        .map_err(|e| Failure::Other(format!("cannot write to stdout: {e}")))?;
                    Ok(Exit::Success)
                }
                None => {
                    if out.is_json() {
                        out.json(&json!({ "found": false, "version": 0 }));
                    } else {
                        eprintln!("kvctl: key not found: {key}");
                    }
                    Ok(Exit::Failure)
                }
            }
        }
        Command::Delete { key } => {
            let deleted = client.delete(key).await?;
            out.result(
                || match deleted {
                    Some(version) => format!("deleted (was version {version})"),
                    None => "not found (nothing to delete)".to_owned(),
                },
                || json!({ "deleted": deleted.is_some(), "prev_version": deleted.unwrap_or(0) }),
            );
            Ok(Exit::Success)
        }
        Command::Scan {
            start,
            end,
            prefix,
            limit,
            keys_only,
            consistency,
        } => {
            let (start, end) = match prefix {
                Some(prefix) => {
                    let end = prefix_end(prefix.as_bytes());
                    (Bytes::from(prefix), end)
                }
                None => (Bytes::from(start), Bytes::from(end)),
            };
            scan(
                &client,
                start,
                end,
                limit,
                keys_only,
                consistency.into(),
                out,
            )
            .await
        }
        Command::Cas {
            key,
            value,
            expected_version,
        } => {
            let outcome = client
                .compare_and_swap(key, expected_version, value)
                .await?;
            if out.is_json() {
                let mut object = Map::new();
                object.insert("succeeded".into(), Value::Bool(outcome.succeeded));
                object.insert("version".into(), outcome.version.into());
                output::put_bytes(&mut object, "current_value", &outcome.current_value);
                out.json(&Value::Object(object));
            } else if outcome.succeeded {
                println!("OK (version {})", outcome.version);
            } else if outcome.version == 0 {
                eprintln!("kvctl: compare failed: the key does not exist");
            } else {
                eprintln!(
                    "kvctl: compare failed: current version is {}, value {}",
                    outcome.version,
                    String::from_utf8_lossy(&outcome.current_value)
                );
            }
            Ok(if outcome.succeeded {
                Exit::Success
            } else {
                Exit::Failure
            })
        }
        Command::Status | Command::Member(MemberCommand::List) => {
            let status = client.status().await?;
            out.result(
                || output::status_text(&status).trim_end().to_owned(),
                || output::status_json(&status),
            );
            Ok(Exit::Success)
        }
        Command::Member(MemberCommand::Add {
            id,
            peer_addr,
            client_addr,
        }) => {
            let members = client.add_member(id, peer_addr, client_addr).await?;
            print_members(out, &members, &format!("added node {id} as a learner"));
            Ok(Exit::Success)
        }
        Command::Member(MemberCommand::Remove { id }) => {
            let members = client.remove_member(id).await?;
            print_members(out, &members, &format!("removed node {id}"));
            Ok(Exit::Success)
        }
        Command::TransferLeader { id } => {
            let leader = client.transfer_leader(id).await?;
            out.result(
                || format!("leader is now node {leader}"),
                || json!({ "leader_id": leader }),
            );
            Ok(Exit::Success)
        }
        Command::Local(_) | Command::Bench(_) | Command::Certs(_) => Err(Failure::Other(
            "internal error: local and bench are not one-shot commands".to_owned(),
        )),
    }
}

async fn scan(
    client: &Client,
    start: Bytes,
    end: Bytes,
    limit: usize,
    keys_only: bool,
    consistency: Consistency,
    out: &Output,
) -> Result<Exit, Failure> {
    // Ask for one item more than shown to learn whether the range goes on.
    let fetch = if limit == 0 {
        0
    } else {
        limit.saturating_add(1)
    };
    let mut items = client.scan_all(start, end, fetch, consistency).await?;
    let more = limit != 0 && items.len() > limit;
    items.truncate(if limit == 0 { items.len() } else { limit });

    if out.is_json() {
        let items: Vec<Value> = items
            .iter()
            .map(|item| {
                let mut object = Map::new();
                output::put_bytes(&mut object, "key", &item.key);
                if !keys_only {
                    output::put_bytes(&mut object, "value", &item.value);
                }
                object.insert("version".into(), item.version.into());
                Value::Object(object)
            })
            .collect();
        out.json(&json!({ "count": items.len(), "items": items, "more": more }));
    } else {
        // One `key<TAB>value` line per item, raw bytes; `raw` adds the final newline.
        let mut text = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                text.push(b'\n');
            }
            text.extend_from_slice(&item.key);
            if !keys_only {
                text.push(b'\t');
                text.extend_from_slice(&item.value);
            }
        }
        if !items.is_empty() {
            out.raw(&text)
                .map_err(|e| Failure::Other(format!("cannot write to stdout: {e}")))?;
        }
        if more {
            out.note(&format!(
                "(more keys after these {limit}; use --limit 0 for all)"
            ));
        }
    }
    Ok(Exit::Success)
}

fn print_members(out: &Output, members: &[raftkv_client::Member], what: &str) {
    // Membership answers carry no leader id, so no row is marked (`kvctl status` marks it).
    out.result(
        || format!("{what}\n\n{}", output::members_text(members, 0).trim_end()),
        || {
            json!({
                "members": members.iter().map(|m| output::member_json(m, 0)).collect::<Vec<_>>()
            })
        },
    );
}

/// The end of the range of keys starting with `prefix`: the prefix with its last byte below 0xff
/// incremented (and the bytes after it dropped). Empty (= to the last key) for all-0xff prefixes.
fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    Bytes::new()
}

fn read_stdin() -> Result<Bytes, Failure> {
    let mut value = Vec::new();
    std::io::stdin()
        .read_to_end(&mut value)
        .map_err(|e| Failure::Other(format!("cannot read the value from stdin: {e}")))?;
    Ok(Bytes::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_first_key_after_the_prefix() {
        assert_eq!(prefix_end(b"app/").as_ref(), b"app0");
        assert_eq!(prefix_end(b"a\xff").as_ref(), b"b");
        assert_eq!(prefix_end(b"\xff\xff").as_ref(), b"");
        assert_eq!(prefix_end(b"").as_ref(), b"");
    }
}
