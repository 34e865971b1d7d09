//! Text from other people, made safe for a terminal: no control character or escape sequence
//! from the network ever reaches the screen, where it could move the cursor, change colours,
//! set the window title, or write to the clipboard.

/// `text` with every control character (C0, DEL, C1) replaced: tabs by a space, other controls
/// by `�`, and bidirectional overrides and isolates (which reorder what follows them) by `�`
/// too. An escape sequence loses its ESC, so it shows as harmless plain characters. Line breaks
/// become spaces unless `keep_newlines`.
pub fn for_terminal(text: &str, keep_newlines: bool) -> String {
    text.chars()
        .map(|c| match c {
            '\n' if keep_newlines => '\n',
            '\t' | '\n' => ' ',
            c if c.is_control() || is_bidi_control(c) => '\u{FFFD}',
            c => c,
        })
        .collect()
}

/// The Unicode bidirectional embedding, override and isolate controls (and the marks), which
/// can make text display in a different order than it is stored ("Trojan Source").
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_controls_never_pass() {
        let hostile = "\u{1b}[2J\u{1b}]0;pwned\u{7}\u{9b}31mred\u{7f}\r\u{202E}txt.exe";
        let safe = for_terminal(hostile, false);
        assert!(
            !safe.chars().any(|c| c.is_control()),
            "control left in {safe:?}"
        );
        assert!(!safe.contains('\u{202E}'));
        assert!(
            safe.contains("[2J"),
            "the visible remains are kept: {safe:?}"
        );
    }

    #[test]
    fn ordinary_text_is_unchanged() {
        let text = "héllo wörld 👋 日本語";
        assert_eq!(for_terminal(text, false), text);
        assert_eq!(for_terminal("a\nb\tc", false), "a b c");
        assert_eq!(for_terminal("a\nb", true), "a\nb");
    }
}
