//! Drawing the client: rooms on the left, the shown room's messages on the right, a status bar
//! and the input line at the bottom. Every piece of text from the network passes through
//! [`for_terminal`] before it reaches a widget.

use grapevine_node::crdt::PublicKey;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, List, ListItem, Paragraph, Wrap};

use super::app::{App, SyncState};
use crate::history::{author_label, local_time};
use crate::sanitize::for_terminal;

/// Width of the rooms column.
const ROOMS_WIDTH: u16 = 22;

/// Draws the whole screen.
pub(crate) fn draw(frame: &mut Frame, app: &App, me: &PublicKey) {
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

fn draw_messages(frame: &mut Frame, app: &App, me: &PublicKey, area: Rect) {
    let Some(name) = &app.current else {
        let hint = Paragraph::new("No room: type /join NAME")
            .block(Block::default().borders(Borders::ALL));
        frame.render_widget(hint, area);
        return;
    };
    let Some(pane) = app.rooms.get(name) else {
        return;
    };
    let mut lines: Vec<Line> = Vec::new();
    for message in &pane.view.messages {
        let nick = pane.view.nicknames.get(&message.author).map(String::as_str);
        let author_style = if message.author == *me {
            Style::default().fg(Color::Green)
        } else {
            Style::default().fg(Color::Cyan)
        };
        let time = local_time(message.sent_at);
        let mut spans = vec![
            Span::styled(
                time.get(11..16).unwrap_or(&time).to_string(),
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
        lines.push(Line::from(spans));
    }
    for notice in &pane.notices {
        lines.push(Line::styled(
            format!("-- {notice}"),
            Style::default().fg(Color::Yellow),
        ));
    }
    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!("#{name}"));
    let inner_height = area.height.saturating_sub(2);
    let paragraph = Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .block(block);
    // Bottom-anchored: the newest line sits on the last row unless scrolled back.
    let total =
        u16::try_from(paragraph.line_count(area.width.saturating_sub(2))).unwrap_or(u16::MAX);
    let bottom = total.saturating_sub(inner_height);
    let offset = bottom.saturating_sub(pane.scroll.min(bottom));
    frame.render_widget(paragraph.scroll((offset, 0)), area);
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
