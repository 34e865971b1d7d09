//! The config file: TOML where every key is optional and an unknown key is an error. Parsed from
//! its bytes alone (no path, no environment), so the parser can be checked on any input.

use std::path::PathBuf;

use libp2p::Multiaddr;
use serde::Deserialize;

/// Why the bytes of a config file cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The file is not UTF-8 text.
    #[error("not UTF-8 text")]
    NotUtf8,
    /// The text is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("{0}")]
    Invalid(String),
    /// An address is not a multiaddr.
    #[error("`{0}` is not a multiaddr (e.g. /ip4/1.2.3.4/tcp/4001/p2p/12D3Koo…)")]
    BadAddress(String),
}

/// The keys exactly as written, before addresses are checked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfigFile {
    data_dir: Option<PathBuf>,
    listen: Option<Vec<String>>,
    bootstrap: Option<Vec<String>>,
    mdns: Option<bool>,
    nick: Option<String>,
    rooms: Option<Vec<String>>,
}

/// What a config file says; `None` where a key is absent, so flags and defaults can fill in.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    /// `data-dir`: where the device key and the rooms are kept.
    pub data_dir: Option<PathBuf>,
    /// `listen`: the addresses to listen on.
    pub listen: Option<Vec<Multiaddr>>,
    /// `bootstrap`: peers to dial at start.
    pub bootstrap: Option<Vec<Multiaddr>>,
    /// `mdns`: whether to look for peers on the local network.
    pub mdns: Option<bool>,
    /// `nick`: the nickname set in the rooms joined at start.
    pub nick: Option<String>,
    /// `rooms`: rooms joined at start.
    pub rooms: Option<Vec<String>>,
}

impl ConfigFile {
    /// Reads a config file's contents: UTF-8, then TOML of the known keys, then every address.
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        let text = std::str::from_utf8(bytes).map_err(|_| ConfigError::NotUtf8)?;
        let raw: RawConfigFile =
            toml::from_str(text).map_err(|e| ConfigError::Invalid(e.message().to_string()))?;
        Ok(Self {
            data_dir: raw.data_dir,
            listen: raw.listen.as_deref().map(parse_addrs).transpose()?,
            bootstrap: raw.bootstrap.as_deref().map(parse_addrs).transpose()?,
            mdns: raw.mdns,
            nick: raw.nick,
            rooms: raw.rooms,
        })
    }
}

fn parse_addrs(addrs: &[String]) -> Result<Vec<Multiaddr>, ConfigError> {
    addrs
        .iter()
        .map(|addr| {
            addr.parse()
                .map_err(|_| ConfigError::BadAddress(addr.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_read() {
        let file = ConfigFile::parse(
            b"data-dir = \"/tmp/gv\"\nlisten = [\"/ip4/0.0.0.0/tcp/4001\"]\nbootstrap = []\nmdns = false\nnick = \"ana\"\nrooms = [\"lobby\"]\n",
        )
        .unwrap();
        assert_eq!(file.data_dir, Some(PathBuf::from("/tmp/gv")));
        assert_eq!(file.listen.map(|l| l.len()), Some(1));
        assert_eq!(file.bootstrap, Some(Vec::new()));
        assert_eq!(file.mdns, Some(false));
        assert_eq!(file.nick.as_deref(), Some("ana"));
        assert_eq!(file.rooms, Some(vec!["lobby".to_string()]));
        assert_eq!(ConfigFile::parse(b"").unwrap(), ConfigFile::default());
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        assert_eq!(
            ConfigFile::parse(b"nick = \"\xff\""),
            Err(ConfigError::NotUtf8)
        );
        assert_eq!(
            ConfigFile::parse(b"listen = [\"nowhere\"]"),
            Err(ConfigError::BadAddress("nowhere".into()))
        );
        for text in ["colour = 1", "mdns = \"yes\"", "rooms = [[[]]]", "nick = "] {
            assert!(
                matches!(
                    ConfigFile::parse(text.as_bytes()),
                    Err(ConfigError::Invalid(_))
                ),
                "{text}"
            );
        }
    }
}
