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
            connected = session.connect_finished() => show_connect_outcome(app, connected),
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

/// Shows how a `/connect` ended as a notice in the room shown: whom it reached, or the error
/// naming the address and why no connection opened.
fn show_connect_outcome(app: &mut App, outcome: Result<String, Output>) {
    match outcome {
        Ok(reached) => app.notice(&reached),
        Err(error) => app.apply(error),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use grapevine_node::crdt::Identity;
    use grapevine_node::{Config, Node, Transport};
    use libp2p::Multiaddr;
    use tempfile::TempDir;

    use super::*;

    /// The longest any wait in these tests may take.
    const WAIT: Duration = Duration::from_secs(20);
    /// The nodes' connect deadline: short, so the test waits for it a fraction of a second.
    const CONNECT_DEADLINE: Duration = Duration::from_millis(300);
    const ROOM: &str = "lobby";

    /// A node on loopback with mDNS off, and a session on it in [`ROOM`], shown in `app`.
    async fn client(dir: &TempDir, app: &mut App) -> Session {
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("a multiaddr")],
            transport: Transport::Tcp,
            mdns: false,
            connect_timeout: CONNECT_DEADLINE,
            ..Config::default()
        };
        let (node, events) = Node::spawn(config).await.expect("the node starts");
        // Nobody reads the events here; the node drops what does not fit.
        drop(events);
        let me = Identity::generate().public_key();
        let (session, outputs) = Session::start(node, me, &[ROOM.to_string()], None)
            .await
            .expect("the session starts");
        for output in outputs {
            app.apply(output);
        }
        app.show(ROOM);
        session
    }

    /// Types `/connect ADDR` and Enter, then shows the outcome as the client's loop does;
    /// returns the notice it added to the room shown.
    async fn connect(session: &mut Session, app: &mut App, addr: &Multiaddr) -> String {
        for c in format!("/connect {addr}").chars() {
            app.insert(c);
        }
        assert!(submit(session, app).await.is_continue());
        let shown_before = app.rooms[ROOM].notices.len();
        let outcome = tokio::time::timeout(WAIT, session.connect_finished())
            .await
            .expect("the /connect ends in time");
        show_connect_outcome(app, outcome);
        let notices = &app.rooms[ROOM].notices;
        assert_eq!(notices.len(), shown_before + 1, "one notice: {notices:?}");
        notices.back().map(|n| n.text.clone()).unwrap_or_default()
    }

    /// A loopback port nobody listens on: one just given back by the kernel.
    fn closed_port() -> Multiaddr {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        format!("/ip4/127.0.0.1/tcp/{port}")
            .parse()
            .expect("a multiaddr")
    }

    /// A loopback listener that takes connections in and never speaks, for as long as the
    /// test's runtime runs.
    async fn silent_listener() -> Multiaddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback listener");
        let port = listener.local_addr().expect("its address").port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        format!("/ip4/127.0.0.1/tcp/{port}")
            .parse()
            .expect("a multiaddr")
    }

    #[tokio::test]
    async fn a_refused_connect_shows_a_notice_naming_the_address_and_the_cause() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut app = App::default();
        let mut session = client(&dir, &mut app).await;
        let closed = closed_port();

        let notice = connect(&mut session, &mut app, &closed).await;
        assert!(
            notice.starts_with(&format!("error: could not connect to {closed}: ")),
            "{notice}"
        );
        assert!(notice.to_lowercase().contains("refused"), "{notice}");
    }

    #[tokio::test]
    async fn a_connect_with_no_answer_shows_a_notice_when_the_deadline_passes() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut app = App::default();
        let mut session = client(&dir, &mut app).await;
        let silent = silent_listener().await;

        let notice = connect(&mut session, &mut app, &silent).await;
        assert_eq!(
            notice,
            format!("error: could not connect to {silent}: no answer within 300ms")
        );
    }

    #[tokio::test]
    async fn a_successful_connect_shows_a_notice_naming_the_peer_and_the_address() {
        let ana_dir = tempfile::tempdir().expect("a temporary directory");
        let bo_dir = tempfile::tempdir().expect("a temporary directory");
        let mut app = App::default();
        let mut session = client(&ana_dir, &mut app).await;
        let bo = client(&bo_dir, &mut App::default()).await;
        let bo_addr = bo
            .node()
            .shareable_addrs()
            .await
            .expect("bo's addresses")
            .into_iter()
            .next()
            .expect("bo listens");

        let notice = connect(&mut session, &mut app, &bo_addr).await;
        let bo_id = bo.node().peer_id();
        assert_eq!(notice, format!("connected to {bo_id} at {bo_addr}"));
    }
}
