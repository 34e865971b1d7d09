//! Drawing the client: rooms on the left, the shown room's messages on the right, a status bar
//! and the input line at the bottom. Every piece of text from the network passes through
//! [`for_terminal`] before it reaches a widget.

use chrono::{DateTime, Local, NaiveDate};
use grapevine_node::crdt::{Hlc, MessageView, PublicKey, RoomView};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, List, ListItem, Paragraph, Wrap};

use super::app::{App, Notice, RoomPane, SyncState};
use crate::history::author_label;
use crate::sanitize::for_terminal;

/// Width of the rooms column.
const ROOMS_WIDTH: u16 = 22;

/// Draws the whole screen; records how far the shown room can scroll, and keeps its scroll
/// within that.
pub(crate) fn draw(frame: &mut Frame, app: &mut App, me: &PublicKey) {
    let [main, status, input] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(3),
    ])
    .areas(frame.area());
    let [rooms, messages] =
        Layout::horizontal([Constraint::Length(ROOMS_WIDTH), Constraint::Min(10)]).areas(main);
    draw_rooms(frame, app, rooms);
    draw_messages(frame, app, me, messages);
    draw_status(frame, app, status);
    draw_input(frame, app, input);
}

fn draw_rooms(frame: &mut Frame, app: &App, area: Rect) {
    let items: Vec<ListItem> = app
        .rooms
        .iter()
        .map(|(name, pane)| {
            let mut style = Style::default();
            if app.current.as_deref() == Some(name) {
                style = style.add_modifier(Modifier::REVERSED);
            }
            let mut spans = vec![Span::styled(format!("#{name}"), style)];
            if pane.unread > 0 {
                spans.push(Span::styled(
                    format!(" ({})", pane.unread),
                    Style::default()
                        .fg(Color::Yellow)
                        .add_modifier(Modifier::BOLD),
                ));
            }
            ListItem::new(Line::from(spans))
        })
        .collect();
    let list = List::new(items).block(Block::default().borders(Borders::ALL).title("rooms"));
    frame.render_widget(list, area);
}

fn draw_messages(frame: &mut Frame, app: &mut App, me: &PublicKey, area: Rect) {
    let Some(name) = app.current.clone() else {
        let hint = Paragraph::new("No room: type /join NAME")
            .block(Block::default().borders(Borders::ALL));
        frame.render_widget(hint, area);
        return;
    };
    let Some(pane) = app.rooms.get_mut(&name) else {
        return;
    };
    let today = Local::now().date_naive();
    let paragraph = Paragraph::new(pane_lines(pane, me, today)).wrap(Wrap { trim: false });
    // Bottom-anchored: the newest line sits on the last row unless scrolled back, and scrolling
    // stops with the oldest line on the first row.
    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!("#{name}"));
    let inner = block.inner(area);
    let total = u16::try_from(paragraph.line_count(inner.width)).unwrap_or(u16::MAX);
    pane.scroll_limit = total.saturating_sub(inner.height);
    pane.scroll = pane.scroll.min(pane.scroll_limit);
    let offset = pane.scroll_limit - pane.scroll;
    frame.render_widget(paragraph.block(block).scroll((offset, 0)), area);
}

/// A room's lines, oldest first: its messages with the notices given among them, in time order.
fn pane_lines(pane: &RoomPane, me: &PublicKey, today: NaiveDate) -> Vec<Line<'static>> {
    let notice_line = |notice: &Notice| {
        Line::styled(
            format!("-- {}", notice.text),
            Style::default().fg(Color::Yellow),
        )
    };
    let mut notices = pane.notices.iter().peekable();
    let mut lines = Vec::new();
    for message in &pane.view.messages {
        while let Some(notice) = notices.next_if(|n| n.at < message.sent_at) {
            lines.push(notice_line(notice));
        }
        lines.push(message_line(&pane.view, message, me, today));
    }
    lines.extend(notices.map(notice_line));
    lines
}

/// One message: when, who, the text with its markers and reactions, and its id's first digits.
fn message_line(
    view: &RoomView,
    message: &MessageView,
    me: &PublicKey,
    today: NaiveDate,
) -> Line<'static> {
    let nick = view.nicknames.get(&message.author).map(String::as_str);
    let author_style = if message.author == *me {
        Style::default().fg(Color::Green)
    } else {
        Style::default().fg(Color::Cyan)
    };
    let mut spans = vec![
        Span::styled(
            time_label(message.sent_at, today),
            Style::default().fg(Color::DarkGray),
        ),
        Span::raw(" "),
        Span::styled(author_label(&message.author, nick), author_style),
        Span::raw(": "),
    ];
    if message.deleted {
        spans.push(Span::styled(
            "(deleted)",
            Style::default()
                .add_modifier(Modifier::ITALIC)
                .fg(Color::DarkGray),
        ));
    } else {
        spans.push(Span::raw(for_terminal(&message.text, false)));
        if message.edited_at.is_some() {
            spans.push(Span::styled(
                " (edited)",
                Style::default().fg(Color::DarkGray),
            ));
        }
    }
    for (reaction, who) in &message.reactions {
        if !who.is_empty() {
            spans.push(Span::styled(
                format!(" [{} {}]", for_terminal(reaction, false), who.len()),
                Style::default().fg(Color::Magenta),
            ));
        }
    }
    spans.push(Span::styled(
        format!(" #{}", &message.id.to_string()[..8]),
        Style::default().fg(Color::DarkGray),
    ));
    Line::from(spans)
}

/// A message's local time: `14:03` on `today`, `2026-12-05 14:03` on any other day, so an old
/// message is not taken for one of today's.
fn time_label(at: Hlc, today: NaiveDate) -> String {
    let millis = i64::try_from(at.unix_millis()).unwrap_or(i64::MAX);
    match DateTime::from_timestamp_millis(millis) {
        Some(utc) => {
            let local = utc.with_timezone(&Local);
            if local.date_naive() == today {
                local.format("%H:%M").to_string()
            } else {
                local.format("%Y-%m-%d %H:%M").to_string()
            }
        }
        None => "????-??-?? ??:??".to_string(),
    }
}

fn draw_status(frame: &mut Frame, app: &App, area: Rect) {
    let mut text = format!("{} peers", app.peers.len());
    if let Some(name) = &app.current
        && let Some(pane) = app.rooms.get(name)
    {
        let sync = match (&pane.sync, pane.members.is_empty()) {
            (SyncState::Syncing(n), _) => format!("syncing {n} records"),
            (SyncState::Complete, _) => "history complete".to_string(),
            (SyncState::Waiting, true) => "no members online yet".to_string(),
            (SyncState::Waiting, false) => "syncing".to_string(),
        };
        text.push_str(&format!(
            " │ #{name}: {} members │ {sync}",
            pane.members.len()
        ));
        if pane.scroll > 0 {
            text.push_str(" │ scrolled back (PgDn)");
        }
    }
    if let Some(warning) = &app.last_warning {
        text.push_str(&format!(" │ warning: {warning}"));
    }
    let bar = Paragraph::new(text).style(Style::default().bg(Color::Blue).fg(Color::White));
    frame.render_widget(bar, area);
}

fn draw_input(frame: &mut Frame, app: &App, area: Rect) {
    let title = if app.input_is_message() {
        "message (Enter to send, /help for commands)"
    } else {
        "command"
    };
    let width = usize::from(area.width.saturating_sub(2)).max(1);
    // Keep the cursor visible on long lines by showing the part around it.
    let skip = app.cursor.saturating_sub(width - 1);
    let shown: String = app.input.chars().skip(skip).take(width).collect();
    let input = Paragraph::new(shown).block(Block::default().borders(Borders::ALL).title(title));
    frame.render_widget(input, area);
    let x = area.x + 1 + u16::try_from(app.cursor - skip).unwrap_or(0);
    frame.set_cursor_position(Position::new(x, area.y + 1));
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::TimeZone;
    use grapevine_node::crdt::{Identity, RecordId};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::*;
    use crate::output::Output;

    /// The client's size in the tests: a common default terminal.
    const WIDTH: u16 = 80;
    const HEIGHT: u16 = 24;

    fn now() -> Hlc {
        let millis = chrono::Utc::now().timestamp_millis();
        Hlc::new(u64::try_from(millis).expect("after 1970"), 0)
    }

    /// `millis` milliseconds after (or, negative, before) `at`.
    fn shifted(at: Hlc, millis: i64) -> Hlc {
        Hlc::new(at.unix_millis().saturating_add_signed(millis), 0)
    }

    fn message(n: u8, author: PublicKey, sent_at: Hlc, text: &str) -> MessageView {
        MessageView {
            id: RecordId([n; 32]),
            author,
            sent_at,
            text: text.to_string(),
            edited_at: None,
            deleted: false,
            reactions: BTreeMap::new(),
        }
    }

    /// A client showing the room `lobby` with `count` messages from `author`, numbered from 1,
    /// written a minute apart and ending a minute ago.
    fn app_with_messages(author: PublicKey, count: u8) -> App {
        let mut app = App::default();
        app.apply(Output::Joined {
            room: "lobby".into(),
        });
        let start = shifted(now(), -60_000 * (i64::from(count) + 1));
        let messages = (1..=count)
            .map(|n| {
                let at = shifted(start, 60_000 * i64::from(n));
                message(n, author, at, &format!("message {n}"))
            })
            .collect();
        app.set_view(
            "lobby",
            RoomView {
                messages,
                ..RoomView::default()
            },
        );
        app
    }

    /// The screen's rows after drawing `app` in a [`WIDTH`]x[`HEIGHT`] terminal.
    fn screen(app: &mut App, me: &PublicKey) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(WIDTH, HEIGHT)).expect("test terminal");
        terminal
            .draw(|frame| draw(frame, app, me))
            .expect("drawing");
        let buffer = terminal.backend().buffer();
        (0..HEIGHT)
            .map(|y| (0..WIDTH).map(|x| buffer[(x, y)].symbol()).collect())
            .collect()
    }

    /// The rows inside the message pane's border, top to bottom: below it are the status bar
    /// and the three rows of the input line.
    fn pane_rows(rows: &[String]) -> Vec<String> {
        let status = rows.len() - 4;
        rows[1..status - 1]
            .iter()
            .map(|row| {
                let inner: String = row.chars().skip(usize::from(ROOMS_WIDTH) + 1).collect();
                inner.trim_end_matches([' ', '│']).to_string()
            })
            .collect()
    }

    #[test]
    fn a_message_after_many_notices_shows_on_the_last_row() {
        let me = Identity::generate().public_key();
        let other = Identity::generate().public_key();
        let mut app = app_with_messages(other, 10);
        app.apply(Output::Listening {
            addr: "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW".into(),
        });
        app.apply(Output::Help {
            commands: crate::input::HELP.iter().map(ToString::to_string).collect(),
        });
        let mut view = app.rooms["lobby"].view.clone();
        view.messages
            .push(message(99, other, shifted(now(), 1), "the newest message"));
        app.set_view("lobby", view);

        let rows = pane_rows(&screen(&mut app, &me));
        let last = rows.last().expect("a message pane");
        assert!(last.contains("the newest message"), "{rows:#?}");
        let listening = rows.iter().position(|r| r.contains("listening on"));
        let help = rows.iter().position(|r| r.contains("/quit"));
        assert!(listening < help, "notices keep their order: {rows:#?}");
    }

    #[test]
    fn notices_sit_after_the_messages_shown_when_they_were_given() {
        let other = Identity::generate().public_key();
        let mut app = app_with_messages(other, 2);
        // A peer whose clock runs ahead wrote the last message shown.
        let mut view = app.rooms["lobby"].view.clone();
        view.messages.push(message(
            3,
            other,
            shifted(now(), 3_600_000),
            "from the future",
        ));
        app.set_view("lobby", view);
        app.notice("an answer");
        let pane = &app.rooms["lobby"];
        let lines: Vec<String> = pane_lines(pane, &other, Local::now().date_naive())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(lines[2].contains("from the future"), "{lines:#?}");
        assert_eq!(lines[3], "-- an answer");
    }

    #[test]
    fn the_newest_line_sits_on_the_pane_s_last_row() {
        let me = Identity::generate().public_key();
        let mut app = app_with_messages(me, 40);
        let rows = pane_rows(&screen(&mut app, &me));
        assert!(
            rows.last().expect("rows").contains("message 40"),
            "{rows:#?}"
        );
        assert!(rows[0].contains("message 23"), "{rows:#?}");
    }

    #[test]
    fn scrolling_stops_at_the_oldest_line_and_comes_back_at_once() {
        let me = Identity::generate().public_key();
        let mut app = app_with_messages(me, 40);
        screen(&mut app, &me);
        for _ in 0..9 {
            app.scroll(10);
        }
        let top = pane_rows(&screen(&mut app, &me));
        assert!(top[0].contains("message 1 "), "{top:#?}");
        assert_eq!(app.rooms["lobby"].scroll, 40 - 18);
        app.scroll(-10);
        let rows = pane_rows(&screen(&mut app, &me));
        assert!(rows[0].contains("message 11 "), "one PgDn moves: {rows:#?}");
        app.scroll(-100);
        let rows = pane_rows(&screen(&mut app, &me));
        assert!(rows.last().expect("rows").contains("message 40"));
    }

    #[test]
    fn messages_from_another_day_show_their_date() {
        let at = |y, m, d, h, min| {
            let time = Local
                .with_ymd_and_hms(y, m, d, h, min, 0)
                .single()
                .expect("an unambiguous local time");
            Hlc::new(
                u64::try_from(time.timestamp_millis()).expect("after 1970"),
                0,
            )
        };
        let today = NaiveDate::from_ymd_opt(2026, 12, 5).expect("a date");
        assert_eq!(time_label(at(2026, 12, 5, 14, 3), today), "14:03");
        assert_eq!(
            time_label(at(2026, 12, 4, 23, 59), today),
            "2026-12-04 23:59"
        );
        assert_eq!(
            time_label(at(2025, 12, 5, 14, 3), today),
            "2025-12-05 14:03"
        );
    }
}
