//! `grapevine history ROOM`: a room's stored history, read from the data directory without
//! going online. Readable text by default; with `--json`, every record in the line-mode schema.
//! It only reads, without the room's lock and changing no file, so it also works while `chat`
//! holds the same data directory: it shows what that process has stored so far.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{Context, Result};
use chrono::{DateTime, Local};
use grapevine_node::ROOM_LIST_FILE;
use grapevine_node::crdt::{Hlc, MessageView, PublicKey, ReadOnlyRoom, RoomId, Store};

use crate::UsageError;
use crate::output::Output;
use crate::sanitize::for_terminal;
use crate::settings::Settings;

/// Prints the history of the room `name`.
pub(crate) fn run(settings: &Settings, name: &str, json: bool) -> Result<()> {
    let room_id = RoomId::for_public_name(name).map_err(|e| UsageError(e.to_string()))?;
    let store = Store::open(&settings.data_dir)
        .with_context(|| format!("opening the store in {}", settings.data_dir.display()))?;
    let known = store.room_keys().context("listing stored rooms")?;
    if !known.contains(&room_id.to_string()) {
        return Err(UsageError(unknown_room_message(settings, name)).into());
    }
    let (room, unread) =
        ReadOnlyRoom::read(&store, room_id).with_context(|| format!("reading room {name}"))?;
    for tail in unread {
        tracing::warn!(?tail, "log tail not read");
        eprintln!(
            "warning: the last {} bytes of {} not read: damaged, or still being written",
            tail.bytes,
            tail.file.display()
        );
    }
    let mut out = std::io::stdout().lock();
    if json {
        let mut records: Vec<_> = room.records().collect();
        records.sort_by_key(|r| (r.sent_at, r.id));
        let mut nicks: HashMap<PublicKey, String> = HashMap::new();
        for record in records {
            if let grapevine_node::crdt::Body::Profile { nickname } = &record.body {
                nicks.insert(record.author, nickname.clone());
            }
            let nick = nicks.get(&record.author).cloned();
            writeln!(out, "{}", Output::record(name, record, nick).to_json())?;
        }
    } else {
        let view = room.view();
        for message in &view.messages {
            let nick = view.nicknames.get(&message.author).map(String::as_str);
            writeln!(out, "{}", readable(message, nick))?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Names the rooms that are stored, so a typo is easy to fix.
fn unknown_room_message(settings: &Settings, name: &str) -> String {
    let saved = std::fs::read_to_string(settings.data_dir.join(ROOM_LIST_FILE)).unwrap_or_default();
    let names: Vec<&str> = saved.lines().filter(|l| !l.trim().is_empty()).collect();
    if names.is_empty() {
        format!(
            "no room {name} in {}: join it with `grapevine chat --room {name}` first",
            settings.data_dir.display()
        )
    } else {
        format!(
            "no room {name} in {}; joined rooms: {}",
            settings.data_dir.display(),
            names.join(", ")
        )
    }
}

/// One message as a line of text: local time, author, text, markers and reactions.
pub(crate) fn readable(message: &MessageView, nick: Option<&str>) -> String {
    let mut line = format!(
        "{}  {}  ",
        local_time(message.sent_at),
        author_label(&message.author, nick)
    );
    if message.deleted {
        line.push_str("(deleted)");
    } else {
        line.push_str(&for_terminal(&message.text, false));
        if message.edited_at.is_some() {
            line.push_str("  (edited)");
        }
    }
    for (reaction, who) in &message.reactions {
        if !who.is_empty() {
            line.push_str(&format!(
                "  {}×{}",
                for_terminal(reaction, false),
                who.len()
            ));
        }
    }
    line.push_str(&format!("  #{}", &message.id.to_string()[..8]));
    line
}

/// `nick·short-key`, or just the short key: a nickname alone can be claimed by anyone.
pub(crate) fn author_label(author: &PublicKey, nick: Option<&str>) -> String {
    match nick {
        Some(nick) => format!("{}·{}", for_terminal(nick, false), author.short()),
        None => author.short(),
    }
}

/// A record time in the local time zone, to the second.
pub(crate) fn local_time(at: Hlc) -> String {
    let millis = i64::try_from(at.unix_millis()).unwrap_or(i64::MAX);
    DateTime::from_timestamp_millis(millis)
        .map(|t| {
            t.with_timezone(&Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "????-??-?? ??:??:??".to_string())
}
