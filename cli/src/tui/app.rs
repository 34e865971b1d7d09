//! What the terminal client shows, kept apart from drawing and from the terminal: rooms with
//! unread counts, each room's messages, members and sync state, the input line and its history.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use grapevine_node::crdt::{Hlc, RoomView};

use crate::output::Output;
use crate::sanitize::for_terminal;

/// Lines of input history kept for Up/Down.
const INPUT_HISTORY: usize = 200;
/// Notices (errors, command answers) kept per room.
const NOTICES: usize = 50;

/// A local notice (an answer to a command, an error), shown among a room's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Notice {
    /// Its place among the messages, which are ordered by `sent_at`: when it was given, and
    /// never before a message or notice already shown then, so it never hides newer lines.
    pub(crate) at: Hlc,
    /// The text, made safe for the terminal.
    pub(crate) text: String,
}

/// How far a room's history has come.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum SyncState {
    /// No member has been synced with yet.
    #[default]
    Waiting,
    /// Records are arriving from a sync.
    Syncing(usize),
    /// A sync with a member completed.
    Complete,
}

/// One joined room as shown.
#[derive(Debug, Default)]
pub(crate) struct RoomPane {
    /// The room as people see it, refreshed from the node when records arrive.
    pub(crate) view: RoomView,
    /// Messages from others that arrived while another room was shown.
    pub(crate) unread: usize,
    /// Connected members.
    pub(crate) members: BTreeSet<String>,
    /// Where its history stands.
    pub(crate) sync: SyncState,
    /// Local notices (answers to commands, errors), oldest first.
    pub(crate) notices: VecDeque<Notice>,
    /// Lines scrolled up from the bottom.
    pub(crate) scroll: u16,
    /// The most lines the pane can scroll up (its lines beyond one screen), as last drawn.
    pub(crate) scroll_limit: u16,
    /// The view is older than what the node holds.
    pub(crate) stale: bool,
}

/// The whole client state.
#[derive(Debug, Default)]
pub(crate) struct App {
    /// Joined rooms by name.
    pub(crate) rooms: BTreeMap<String, RoomPane>,
    /// The room shown.
    pub(crate) current: Option<String>,
    /// Connected peers.
    pub(crate) peers: BTreeSet<String>,
    /// The input line.
    pub(crate) input: String,
    /// Cursor position in `input`, in characters.
    pub(crate) cursor: usize,
    history: Vec<String>,
    history_pos: Option<usize>,
    /// The last warning from the network, shown in the status bar.
    pub(crate) last_warning: Option<String>,
}

impl App {
    /// Shows `name` (joining it in the list if new) and clears its unread count.
    pub(crate) fn show(&mut self, name: &str) {
        let pane = self.rooms.entry(name.to_string()).or_default();
        pane.unread = 0;
        self.current = Some(name.to_string());
    }

    /// The pane shown, if any.
    pub(crate) fn current_pane(&mut self) -> Option<&mut RoomPane> {
        let name = self.current.clone()?;
        self.rooms.get_mut(&name)
    }

    /// Shows the next (or previous) room in the list.
    pub(crate) fn cycle_room(&mut self, forward: bool) {
        let names: Vec<String> = self.rooms.keys().cloned().collect();
        if names.is_empty() {
            return;
        }
        let at = self
            .current
            .as_ref()
            .and_then(|c| names.iter().position(|n| n == c))
            .unwrap_or(0);
        let next = if forward {
            (at + 1) % names.len()
        } else {
            (at + names.len() - 1) % names.len()
        };
        self.show(&names[next].clone());
    }

    /// A local notice in the current room (or nowhere, before any room is joined), given now.
    pub(crate) fn notice(&mut self, text: &str) {
        let millis = chrono::Utc::now().timestamp_millis();
        self.notice_at(text, Hlc::new(u64::try_from(millis).unwrap_or(0), 0));
    }

    /// [`App::notice`] given at the time `now`: placed after every line shown already.
    fn notice_at(&mut self, text: &str, now: Hlc) {
        if let Some(pane) = self.current_pane() {
            let shown = pane
                .view
                .messages
                .last()
                .map(|m| m.sent_at)
                .max(pane.notices.back().map(|n| n.at));
            pane.notices.push_back(Notice {
                at: shown.map_or(now, |shown| shown.max(now)),
                text: for_terminal(text, false),
            });
            while pane.notices.len() > NOTICES {
                pane.notices.pop_front();
            }
        }
    }

    /// Takes in one session output.
    pub(crate) fn apply(&mut self, output: Output) {
        match output {
            Output::Joined { room } => {
                self.rooms.entry(room.clone()).or_default().stale = true;
                if self.current.is_none() {
                    self.show(&room);
                }
            }
            Output::Left { room } => {
                self.rooms.remove(&room);
                if self.current.as_deref() == Some(&room) {
                    self.current = self.rooms.keys().next().cloned();
                }
            }
            Output::Message { room, .. } => self.record_arrived(&room, true),
            Output::Edit { room, .. }
            | Output::Delete { room, .. }
            | Output::Reaction { room, .. }
            | Output::Nick { room, .. } => self.record_arrived(&room, false),
            Output::Synced { room, .. } => {
                if let Some(pane) = self.rooms.get_mut(&room) {
                    pane.sync = SyncState::Complete;
                }
            }
            Output::RoomPeers { room, peers } => {
                if let Some(pane) = self.rooms.get_mut(&room) {
                    pane.members = peers.into_iter().collect();
                }
            }
            Output::PeerConnected { peer } => {
                self.peers.insert(peer);
            }
            Output::PeerDisconnected { peer } => {
                self.peers.remove(&peer);
            }
            Output::Peers { peers } => {
                self.notice(&format!("{} connected peers:", peers.len()));
                for peer in &peers {
                    self.notice(&format!("  {peer}"));
                }
                self.peers = peers.into_iter().collect();
            }
            Output::Rooms { rooms, current } => {
                let list: Vec<String> = rooms
                    .iter()
                    .map(|r| {
                        if Some(r) == current.as_ref() {
                            format!("[{r}]")
                        } else {
                            r.clone()
                        }
                    })
                    .collect();
                self.notice(&format!("rooms: {}", list.join(" ")));
            }
            Output::Help { commands } => {
                for line in commands {
                    self.notice(&line);
                }
            }
            Output::Warning { message, .. } => {
                self.last_warning = Some(for_terminal(&message, false));
            }
            Output::Error { message } => self.notice(&format!("error: {message}")),
            Output::Listening { addr } => self.notice(&format!("listening on {addr}")),
        }
    }

    /// Counts a sync's records while it runs.
    pub(crate) fn sync_progress(&mut self, room: &str, new_records: usize) {
        if let Some(pane) = self.rooms.get_mut(room) {
            pane.sync = match pane.sync {
                SyncState::Syncing(n) => SyncState::Syncing(n + new_records),
                _ => SyncState::Syncing(new_records),
            };
        }
    }

    fn record_arrived(&mut self, room: &str, is_message: bool) {
        let shown = self.current.as_deref() == Some(room);
        if let Some(pane) = self.rooms.get_mut(room) {
            pane.stale = true;
            if is_message && !shown {
                pane.unread += 1;
            }
        }
    }

    /// Replaces a room's view with a fresh one from the node.
    pub(crate) fn set_view(&mut self, room: &str, view: RoomView) {
        if let Some(pane) = self.rooms.get_mut(room) {
            pane.view = view;
        }
    }

    /// Whether the text typed so far is a message rather than a command.
    pub(crate) fn input_is_message(&self) -> bool {
        !self.input.starts_with('/') || self.input.starts_with("//")
    }

    /// Takes the input line for sending, remembering it for Up/Down.
    pub(crate) fn take_input(&mut self) -> String {
        let line = std::mem::take(&mut self.input);
        self.cursor = 0;
        self.history_pos = None;
        if !line.trim().is_empty() && self.history.last() != Some(&line) {
            self.history.push(line.clone());
            if self.history.len() > INPUT_HISTORY {
                self.history.remove(0);
            }
        }
        line
    }

    /// Inserts a character at the cursor.
    pub(crate) fn insert(&mut self, c: char) {
        let at = self.byte_index(self.cursor);
        self.input.insert(at, c);
        self.cursor += 1;
    }

    /// Deletes the character before the cursor.
    pub(crate) fn backspace(&mut self) {
        if self.cursor > 0 {
            self.cursor -= 1;
            let at = self.byte_index(self.cursor);
            self.input.remove(at);
        }
    }

    /// Deletes the character under the cursor.
    pub(crate) fn delete(&mut self) {
        if self.cursor < self.input.chars().count() {
            let at = self.byte_index(self.cursor);
            self.input.remove(at);
        }
    }

    /// Deletes the word before the cursor (Ctrl-W).
    pub(crate) fn delete_word(&mut self) {
        let chars: Vec<char> = self.input.chars().collect();
        let mut start = self.cursor;
        while start > 0 && chars[start - 1].is_whitespace() {
            start -= 1;
        }
        while start > 0 && !chars[start - 1].is_whitespace() {
            start -= 1;
        }
        self.input = chars[..start].iter().chain(&chars[self.cursor..]).collect();
        self.cursor = start;
    }

    /// Moves the cursor by `delta` characters, within the line.
    pub(crate) fn move_cursor(&mut self, delta: isize) {
        let len = self.input.chars().count();
        self.cursor = self.cursor.saturating_add_signed(delta).min(len);
    }

    /// Moves the cursor to the start or the end of the line.
    pub(crate) fn cursor_to(&mut self, end: bool) {
        self.cursor = if end { self.input.chars().count() } else { 0 };
    }

    /// Clears the line (Ctrl-U).
    pub(crate) fn clear_input(&mut self) {
        self.input.clear();
        self.cursor = 0;
    }

    /// Recalls an older (Up) or newer (Down) line from the input history.
    pub(crate) fn recall(&mut self, older: bool) {
        if self.history.is_empty() {
            return;
        }
        let pos = match (self.history_pos, older) {
            (None, true) => Some(self.history.len() - 1),
            (None, false) => None,
            (Some(p), true) => Some(p.saturating_sub(1)),
            (Some(p), false) if p + 1 < self.history.len() => Some(p + 1),
            (Some(_), false) => None,
        };
        self.history_pos = pos;
        self.input = pos.map(|p| self.history[p].clone()).unwrap_or_default();
        self.cursor_to(true);
    }

    /// Scrolls the shown room by `lines` (positive: back in time), no further than its oldest
    /// line at the top.
    pub(crate) fn scroll(&mut self, lines: i16) {
        if let Some(pane) = self.current_pane() {
            pane.scroll = pane
                .scroll
                .saturating_add_signed(lines)
                .min(pane.scroll_limit);
        }
    }

    fn byte_index(&self, chars: usize) -> usize {
        self.input
            .char_indices()
            .nth(chars)
            .map_or(self.input.len(), |(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_editing_works_on_characters_not_bytes() {
        let mut app = App::default();
        for c in "héllo wörld".chars() {
            app.insert(c);
        }
        app.move_cursor(-5);
        app.insert('X');
        assert_eq!(app.input, "héllo Xwörld");
        app.backspace();
        app.delete_word();
        assert_eq!(app.input, "wörld");
        app.cursor_to(true);
        app.backspace();
        assert_eq!(app.input, "wörl");
    }

    #[test]
    fn input_history_recalls_older_and_newer_lines() {
        let mut app = App::default();
        for line in ["one", "two"] {
            app.input = line.into();
            app.take_input();
        }
        app.recall(true);
        assert_eq!(app.input, "two");
        app.recall(true);
        assert_eq!(app.input, "one");
        app.recall(false);
        assert_eq!(app.input, "two");
        app.recall(false);
        assert_eq!(app.input, "");
    }

    #[test]
    fn messages_in_other_rooms_count_as_unread() {
        let mut app = App::default();
        app.apply(Output::Joined { room: "a".into() });
        app.apply(Output::Joined { room: "b".into() });
        assert_eq!(app.current.as_deref(), Some("a"));
        let message = |room: &str| Output::Message {
            room: room.into(),
            id: "00".into(),
            author: "x".into(),
            nick: None,
            sent_at: String::new(),
            body: "hi".into(),
        };
        app.apply(message("a"));
        app.apply(message("b"));
        assert_eq!(app.rooms["a"].unread, 0);
        assert_eq!(app.rooms["b"].unread, 1);
        app.cycle_room(true);
        assert_eq!(app.rooms["b"].unread, 0);
    }
}
