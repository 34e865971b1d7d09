//! `grapevine completions SHELL` and `grapevine man`: a shell completion script and the manual
//! page, generated from the clap definition. Each is made whole in memory and written at once, so
//! a reader that stops early (`grapevine man | head`) ends the program quietly instead of making
//! a generator panic halfway through a write.

use std::io::Write;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use crate::args::Cli;

/// Prints the completion script for `shell`.
pub(crate) fn completions(shell: Shell) -> Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "grapevine", &mut script);
    write_out(&script).context("writing the completion script")
}

/// Prints the manual page.
pub(crate) fn manual_page() -> Result<()> {
    write_out(&render_manual_page()?).context("writing the manual page")
}

/// One page for the whole program: the common flags, then every command with its arguments and
/// flags. clap_mangen alone renders the top level only and points at a page per command
/// (`grapevine-chat(1)`) that nothing installs.
fn render_manual_page() -> Result<Vec<u8>> {
    let mut command = Cli::command();
    command.build();
    let page = clap_mangen::Man::new(command.clone());
    let mut roff = Vec::new();
    page.render_title(&mut roff)?;
    page.render_name_section(&mut roff)?;
    page.render_synopsis_section(&mut roff)?;
    page.render_description_section(&mut roff)?;
    page.render_options_section(&mut roff)?;
    roff.extend_from_slice(b".SH COMMANDS\n");
    let shared: Vec<_> = command
        .get_arguments()
        .map(|arg| arg.get_id().clone())
        .collect();
    for subcommand in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = subcommand
            .get_bin_name()
            .unwrap_or_else(|| subcommand.get_name())
            .to_string();
        // The common flags and --help are described once, above.
        let mut own = subcommand.clone();
        for id in shared.iter().chain(&[clap::Id::from("help")]) {
            if own.get_arguments().any(|arg| arg.get_id() == id) {
                own = own.mut_arg(id, |arg| arg.hide(true));
            }
        }
        let section = clap_mangen::Man::new(own);
        writeln!(roff, ".SS \"{name}\"")?;
        if let Some(about) = subcommand.get_about() {
            writeln!(roff, "{}", escape(&about.to_string()))?;
        }
        roff.extend_from_slice(b".PP\n");
        roff.extend(without_heading(&section, |m, w| {
            m.render_synopsis_section(w)
        })?);
        roff.extend(without_heading(&section, |m, w| {
            m.render_options_section(w)
        })?);
    }
    page.render_version_section(&mut roff)?;
    Ok(roff)
}

/// A section clap_mangen renders, without its `.SH` heading (and the string definitions roff
/// output starts with, already on the page), to go under a `.SS` heading.
fn without_heading(
    page: &clap_mangen::Man,
    render: impl Fn(&clap_mangen::Man, &mut Vec<u8>) -> std::io::Result<()>,
) -> Result<Vec<u8>> {
    let mut section = Vec::new();
    render(page, &mut section)?;
    let text = String::from_utf8(section).context("clap_mangen wrote a page not in UTF-8")?;
    let body = match text.split_once("\n.SH ") {
        Some((_, heading_and_body)) => heading_and_body
            .split_once('\n')
            .map_or("", |(_, body)| body),
        // A command with nothing to list renders only the definitions.
        None => "",
    };
    Ok(body.as_bytes().to_vec())
}

/// Text made safe for a roff text line: a leading `.` or `'` would read as a request, and `\`
/// starts an escape.
fn escape(text: &str) -> String {
    let text = text.replace('\\', "\\e");
    if text.starts_with(['.', '\'']) {
        format!("\\&{text}")
    } else {
        text
    }
}

/// Writes `bytes` to stdout at once. A reader that has gone away (a closed pipe) comes back as
/// an error that `main` ends quietly on, as for every command.
fn write_out(bytes: &[u8]) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manual_page_describes_every_command_and_its_flags() {
        let page = String::from_utf8(render_manual_page().unwrap()).unwrap();
        for text in [
            ".TH grapevine",
            ".SS \"grapevine chat\"",
            ".SS \"grapevine send\"",
            ".SS \"grapevine completions\"",
            "\\-\\-room",
            "\\-\\-nick",
            "\\-\\-plain",
            "\\-\\-json",
            "\\-\\-timeout",
            "\\-\\-data\\-dir",
        ] {
            assert!(page.contains(text), "no {text} in:\n{page}");
        }
        assert!(!page.contains("grapevine-chat"), "{page}");
        assert!(!page.contains("(1)"), "refers to no other page: {page}");
        assert_eq!(page.matches(".TH ").count(), 1, "one page");
        let (_, commands) = page.split_once(".SH COMMANDS").unwrap();
        assert!(
            !commands.contains("data\\-dir"),
            "the common flags are described once: {commands}"
        );
    }
}
