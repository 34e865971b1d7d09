//! `grapevine chat` in a terminal: a ratatui client over a [`Session`]. Keys, node events and
//! signals meet in one loop; views are refreshed from the node at most every
//! [`REFRESH_INTERVAL`], so a burst of records costs one redraw.

mod app;
mod draw;

use std::time::Duration;

use anyhow::{Context, Result};
use grapevine_node::crdt::PublicKey;
use grapevine_node::{NodeEvent, NodeHandle};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use tokio::sync::mpsc;

use crate::input::{self, Input};
use crate::output::Output;
use crate::session::Session;
use app::App;

/// How often stale views are fetched again and the screen redrawn.
const REFRESH_INTERVAL: Duration = Duration::from_millis(100);
/// Terminal events waiting for the loop: typing is never that fast.
const TERMINAL_EVENT_CAPACITY: usize = 256;
/// Lines moved by PageUp/PageDown.
const PAGE: i16 = 10;

/// Runs the client until `/quit`, Ctrl-C, or the terminal closes; restores the terminal and
/// shuts the node down (storing everything) before returning.
pub(crate) async fn run(
    node: NodeHandle,
    mut events: mpsc::Receiver<NodeEvent>,
    me: PublicKey,
    rooms: &[String],
    nick: Option<&str>,
) -> Result<()> {
    let (mut session, outputs) = Session::start(node.clone(), me, rooms, nick).await?;
    let mut app = App::default();
    // The listen addresses come before any room is joined, and a notice needs a room to be
    // shown in: they go to the first room shown, so the user can pass one to `--bootstrap`.
    let (addresses, others): (Vec<Output>, Vec<Output>) = outputs
        .into_iter()
        .partition(|output| matches!(output, Output::Listening { .. }));
    for output in others {
        app.apply(output);
    }
    if let Some(current) = session.current() {
        app.show(current);
    }
    for output in addresses {
        app.apply(output);
    }
    let mut stop = crate::signals::Stop::new()?;
    let mut terminal = ratatui::try_init().context("setting up the terminal")?;
    let keys = spawn_terminal_reader();
    let result = event_loop(
        &mut terminal,
        &mut session,
        &mut app,
        &mut events,
        keys,
        &mut stop,
    )
    .await;
    ratatui::restore();
    node.shutdown().await.context("storing the rooms")?;
    result
}

/// Reads terminal events on a thread of its own (crossterm's reads block) and forwards them.
fn spawn_terminal_reader() -> mpsc::Receiver<std::io::Result<Event>> {
    let (tx, rx) = mpsc::channel(TERMINAL_EVENT_CAPACITY);
    std::thread::spawn(move || {
        loop {
            let read = event::read();
            let failed = read.is_err();
            if tx.blocking_send(read).is_err() || failed {
                return;
            }
        }
    });
    rx
}

async fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    session: &mut Session,
    app: &mut App,
    events: &mut mpsc::Receiver<NodeEvent>,
    mut keys: mpsc::Receiver<std::io::Result<Event>>,
    stop: &mut crate::signals::Stop,
) -> Result<()> {
    let mut refresh = tokio::time::interval(REFRESH_INTERVAL);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            key = keys.recv() => match key {
                Some(Ok(Event::Key(key))) if key.kind != KeyEventKind::Release => {
                    if handle_key(session, app, key).await.is_break() {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                // The terminal is gone: nothing more can be typed or shown.
                Some(Err(_)) | None => return Ok(()),
            },
            event = events.recv() => match event {
                Some(event) => {
                    if let NodeEvent::SyncProgress { room, new_records, .. } = &event
                        && let Some(name) = session.room_name(*room) {
                            let name = name.to_string();
                            app.sync_progress(&name, *new_records);
                        }
                    for output in session.on_event(&event) {
                        app.apply(output);
                    }
                }
                None => return Ok(()),
            },
            connected = session.connect_finished() => match connected {
                Ok(reached) => app.notice(&reached),
                Err(error) => app.apply(error),
            },
            _ = refresh.tick() => {
                refresh_views(session, app).await;
                let me = session.me();
                terminal
                    .draw(|frame| draw::draw(frame, &mut *app, &me))
                    .context("drawing the screen")?;
            }
            () = stop.wait() => return Ok(()),
        }
    }
}

/// Fetches the views of rooms whose records changed.
async fn refresh_views(session: &Session, app: &mut App) {
    let stale: Vec<String> = app
        .rooms
        .iter()
        .filter(|(_, pane)| pane.stale)
        .map(|(name, _)| name.clone())
        .collect();
    for name in stale {
        if let Ok(view) = session.node().view(&name).await {
            app.set_view(&name, view);
        }
        if let Some(pane) = app.rooms.get_mut(&name) {
            pane.stale = false;
        }
    }
}

/// Handles one key; breaks when the user quits.
async fn handle_key(
    session: &mut Session,
    app: &mut App,
    key: KeyEvent,
) -> std::ops::ControlFlow<()> {
    use std::ops::ControlFlow::{Break, Continue};
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    match key.code {
        KeyCode::Char('c' | 'd') if ctrl => return Break(()),
        KeyCode::Char('u') if ctrl => app.clear_input(),
        KeyCode::Char('w') if ctrl => app.delete_word(),
        KeyCode::Char('a') if ctrl => app.cursor_to(false),
        KeyCode::Char('e') if ctrl => app.cursor_to(true),
        KeyCode::Char('n') if ctrl => switch_room(session, app, true),
        KeyCode::Char('p') if ctrl => switch_room(session, app, false),
        KeyCode::Tab => switch_room(session, app, true),
        KeyCode::BackTab => switch_room(session, app, false),
        KeyCode::Char(c) if !ctrl => app.insert(c),
        KeyCode::Backspace => app.backspace(),
        KeyCode::Delete => app.delete(),
        KeyCode::Left => app.move_cursor(-1),
        KeyCode::Right => app.move_cursor(1),
        KeyCode::Home => app.cursor_to(false),
        KeyCode::End => app.cursor_to(true),
        KeyCode::Up => app.recall(true),
        KeyCode::Down => app.recall(false),
        KeyCode::PageUp => app.scroll(PAGE),
        KeyCode::PageDown => app.scroll(-PAGE),
        KeyCode::Enter => return submit(session, app).await,
        _ => {}
    }
    Continue(())
}

fn switch_room(session: &mut Session, app: &mut App, forward: bool) {
    app.cycle_room(forward);
    if let Some(name) = app.current.clone() {
        session.switch_to(&name);
    }
}

/// Sends the input line as a message or runs it as a command.
async fn submit(session: &mut Session, app: &mut App) -> std::ops::ControlFlow<()> {
    use std::ops::ControlFlow::{Break, Continue};
    let line = app.take_input();
    match input::parse(&line) {
        Ok(None) => {}
        Ok(Some(Input::Quit)) => return Break(()),
        Ok(Some(input)) => {
            let joining = matches!(input, Input::Join(_));
            match session.on_input(input).await {
                Ok(outputs) => {
                    for output in outputs {
                        app.apply(output);
                    }
                    if let Some(current) = session.current()
                        && (joining || app.current.as_deref() != Some(current))
                    {
                        app.show(current);
                    }
                }
                Err(message) => app.notice(&format!("error: {message}")),
            }
        }
        Err(message) => app.notice(&format!("error: {message}")),
    }
    Continue(())
}
