//! What a typed line means: a message for the current room, or a slash command. Shared by the
//! terminal client and line mode, so both understand exactly the same input.

use libp2p::Multiaddr;

/// One line of user input, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    /// Say this in the current room.
    Message(String),
    /// `/join NAME`: join a room and make it current.
    Join(String),
    /// `/leave [NAME]`: leave a room (the current one by default).
    Leave(Option<String>),
    /// `/nick NAME`: set one's nickname in the current room.
    Nick(String),
    /// `/peers`: list connected peers.
    Peers,
    /// `/rooms`: list joined rooms.
    Rooms,
    /// `/edit ID TEXT`: replace the text of one's own message.
    Edit(String, String),
    /// `/delete ID`: delete one's own message.
    Delete(String),
    /// `/react ID REACTION`: give a reaction, or take it back if already given.
    React(String, String),
    /// `/connect ADDR`: dial a peer.
    Connect(Multiaddr),
    /// `/help`: list the commands.
    Help,
    /// `/quit`: store everything and exit.
    Quit,
}

/// One line per command, for `/help`.
pub(crate) const HELP: &[&str] = &[
    "/join NAME          join a room and switch to it",
    "/leave [NAME]       leave a room (the current one by default)",
    "/nick NAME          set your nickname in the current room",
    "/peers              list connected peers",
    "/rooms              list joined rooms",
    "/edit ID TEXT       change one of your messages (ID: its id or a prefix of it)",
    "/delete ID          delete one of your messages",
    "/react ID EMOJI     react to a message (again to take it back)",
    "/connect ADDR       dial a peer by multiaddr; gives up after 10 s",
    "/help               this list",
    "/quit               store everything and exit",
    "//text              send a message that starts with /",
];

/// Understands one line; `Ok(None)` for a blank line. The error says what is wrong.
pub(crate) fn parse(line: &str) -> Result<Option<Input>, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Ok(None);
    }
    let Some(command) = line.strip_prefix('/') else {
        return Ok(Some(Input::Message(line.to_string())));
    };
    if command.starts_with('/') {
        return Ok(Some(Input::Message(command.to_string())));
    }
    let (name, rest) = command
        .split_once(char::is_whitespace)
        .map_or((command, ""), |(name, rest)| (name, rest.trim()));
    let input = match name {
        "join" => Input::Join(one_word(rest, "/join NAME")?),
        "leave" => Input::Leave((!rest.is_empty()).then(|| rest.to_string())),
        "nick" => Input::Nick(required(rest, "/nick NAME")?),
        "peers" => Input::Peers,
        "rooms" => Input::Rooms,
        "edit" => {
            let (id, text) = two_parts(rest, "/edit ID TEXT")?;
            Input::Edit(id, text)
        }
        "delete" => Input::Delete(one_word(rest, "/delete ID")?),
        "react" => {
            let (id, reaction) = two_parts(rest, "/react ID EMOJI")?;
            Input::React(id, reaction)
        }
        "connect" => {
            let addr = one_word(rest, "/connect ADDR")?;
            Input::Connect(addr.parse().map_err(|_| {
                format!("`{addr}` is not a multiaddr, e.g. /ip4/10.0.0.2/tcp/4001/p2p/12D3Koo…")
            })?)
        }
        "help" => Input::Help,
        "quit" | "exit" => Input::Quit,
        other => return Err(format!("unknown command /{other}: /help lists them")),
    };
    Ok(Some(input))
}

fn required(rest: &str, usage: &str) -> Result<String, String> {
    if rest.is_empty() {
        Err(format!("usage: {usage}"))
    } else {
        Ok(rest.to_string())
    }
}

fn one_word(rest: &str, usage: &str) -> Result<String, String> {
    let word = required(rest, usage)?;
    if word.contains(char::is_whitespace) {
        Err(format!("usage: {usage} (one word)"))
    } else {
        Ok(word)
    }
}

fn two_parts(rest: &str, usage: &str) -> Result<(String, String), String> {
    match rest.split_once(char::is_whitespace) {
        Some((first, second)) if !second.trim().is_empty() => {
            Ok((first.to_string(), second.trim().to_string()))
        }
        _ => Err(format!("usage: {usage}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_are_messages_and_slashes_are_commands() {
        assert_eq!(parse("hello"), Ok(Some(Input::Message("hello".into()))));
        assert_eq!(parse("  "), Ok(None));
        assert_eq!(parse("//etc"), Ok(Some(Input::Message("/etc".into()))));
        assert_eq!(parse("/join lobby"), Ok(Some(Input::Join("lobby".into()))));
        assert_eq!(parse("/leave"), Ok(Some(Input::Leave(None))));
        assert_eq!(
            parse("/edit ab12 new text here"),
            Ok(Some(Input::Edit("ab12".into(), "new text here".into())))
        );
        assert_eq!(
            parse("/react ab12 👍"),
            Ok(Some(Input::React("ab12".into(), "👍".into())))
        );
        assert_eq!(parse("/quit"), Ok(Some(Input::Quit)));
        assert!(matches!(
            parse("/connect /ip4/127.0.0.1/tcp/1"),
            Ok(Some(Input::Connect(_)))
        ));
    }

    #[test]
    fn the_help_gives_the_node_s_connect_deadline() {
        let deadline = format!(
            "{} s",
            grapevine_node::config::DEFAULT_CONNECT_TIMEOUT.as_secs()
        );
        let connect = HELP.iter().find(|line| line.starts_with("/connect"));
        assert!(
            connect.is_some_and(|line| line.contains(&deadline)),
            "{connect:?}"
        );
    }

    #[test]
    fn bad_commands_say_what_is_wrong() {
        assert!(
            parse("/frobnicate")
                .unwrap_err()
                .contains("unknown command")
        );
        assert!(parse("/join").unwrap_err().contains("usage"));
        assert!(parse("/join two words").unwrap_err().contains("one word"));
        assert!(parse("/edit onlyid").unwrap_err().contains("usage"));
        assert!(
            parse("/connect nowhere")
                .unwrap_err()
                .contains("not a multiaddr")
        );
    }
}
