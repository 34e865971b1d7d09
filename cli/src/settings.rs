//! Validated settings: command-line flags (with their `GRAPEVINE_*` environment variables)
//! first, then the TOML config file, then defaults. Everything the program runs with is checked
//! here, so a mistake is reported before any network or disk work starts.

use std::path::{Path, PathBuf};

use directories::ProjectDirs;
use grapevine_cli::config_file::{ConfigError, ConfigFile};
use grapevine_node::crdt::record::MAX_NICKNAME_BYTES;
use grapevine_node::{Config, Transport};
use libp2p::Multiaddr;

use crate::args::CommonArgs;

/// Name of the config file in the platform's config directory.
pub(crate) const CONFIG_FILE: &str = "config.toml";
/// Name of the log file.
pub(crate) const LOG_FILE: &str = "grapevine.log";

/// A setting that cannot be used, with what to do about it. The program exits with code 2.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SettingsError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {cause} (fix the path or drop --config)")]
    ConfigUnreadable {
        /// The file.
        path: PathBuf,
        /// Why: part of the message, not an error source, so the one line names it once.
        cause: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown keys or wrong types.
    #[error("config file {path} is invalid: {message}")]
    ConfigInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, as the TOML parser says it.
        message: String,
    },
    /// An address in the config file is not a multiaddr.
    #[error(
        "config file {path}: `{addr}` is not a multiaddr (e.g. /ip4/1.2.3.4/tcp/4001/p2p/12D3Koo…)"
    )]
    BadAddress {
        /// The file.
        path: PathBuf,
        /// The address as written.
        addr: String,
    },
    /// The nickname is empty or longer than records allow.
    #[error(
        "nickname {nick:?} is {problem}: give --nick (or `nick` in the config file) a name of 1 \
         to {MAX_NICKNAME_BYTES} bytes"
    )]
    BadNick {
        /// The nickname as given.
        nick: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// No data directory was given and the platform has no home directory to put one in.
    #[error("no home directory to keep data in: pass --data-dir DIR")]
    NoHome,
    /// The data directory cannot be created or written.
    #[error(
        "data directory {path} is not usable: {cause} (pass --data-dir with a writable directory)"
    )]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why: part of the message, not an error source, so the one line names it once.
        cause: std::io::Error,
    },
}

/// The settings every command runs with.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Holds the device key and the rooms.
    pub(crate) data_dir: PathBuf,
    /// Where log files go.
    pub(crate) log_dir: PathBuf,
    /// Addresses to listen on.
    pub(crate) listen: Vec<Multiaddr>,
    /// The addresses came from a flag, the environment or the config file (a command may have a
    /// default of its own otherwise).
    pub(crate) listen_given: bool,
    /// Peers to dial at start.
    pub(crate) bootstrap: Vec<Multiaddr>,
    /// Look for peers on the local network.
    pub(crate) mdns: bool,
    /// Nickname from the config file, used when `--nick` is not given.
    pub(crate) nick: Option<String>,
    /// Rooms from the config file, joined at start besides those given with `--room`.
    pub(crate) rooms: Vec<String>,
}

impl Settings {
    /// Combines flags, the config file and defaults. The config file is the one given, else
    /// `config.toml` in the platform's config directory if it exists.
    pub(crate) fn resolve(args: &CommonArgs) -> Result<Self, SettingsError> {
        let dirs = ProjectDirs::from("org", "grapevine", "grapevine");
        let file = match (&args.config, &dirs) {
            (Some(path), _) => read_config(path)?,
            (None, Some(dirs)) => {
                let path = dirs.config_dir().join(CONFIG_FILE);
                if path.exists() {
                    read_config(&path)?
                } else {
                    ConfigFile::default()
                }
            }
            (None, None) => ConfigFile::default(),
        };
        let data_dir_given = args.data_dir.clone().or(file.data_dir.clone());
        let data_dir = match (&data_dir_given, &dirs) {
            (Some(dir), _) => dir.clone(),
            (None, Some(dirs)) => dirs.data_dir().to_path_buf(),
            (None, None) => return Err(SettingsError::NoHome),
        };
        // A data directory chosen by hand keeps its own logs, so two profiles never mix theirs.
        let log_dir = match (&data_dir_given, &dirs) {
            (None, Some(dirs)) => dirs
                .state_dir()
                .unwrap_or_else(|| dirs.data_dir())
                .to_path_buf(),
            _ => data_dir.join("logs"),
        };
        let (listen, listen_given) = if args.listen.is_empty() {
            match file.listen {
                Some(addrs) => (addrs, true),
                None => (default_listen(), false),
            }
        } else {
            (args.listen.clone(), true)
        };
        let bootstrap = if args.bootstrap.is_empty() {
            file.bootstrap.unwrap_or_default()
        } else {
            args.bootstrap.clone()
        };
        Ok(Self {
            data_dir,
            log_dir,
            listen,
            listen_given,
            bootstrap,
            mdns: !args.no_mdns && file.mdns.unwrap_or(true),
            nick: file.nick,
            rooms: file.rooms.unwrap_or_default(),
        })
    }

    /// The nickname `chat` sets: `--nick` (or `GRAPEVINE_NICK`) if given, else the config
    /// file's, checked before the node starts so a bad one is refused as bad input.
    pub(crate) fn chat_nick(&self, flag: Option<&str>) -> Result<Option<String>, SettingsError> {
        let Some(nick) = flag.or(self.nick.as_deref()) else {
            return Ok(None);
        };
        let problem = if nick.is_empty() {
            "empty"
        } else if nick.len() > MAX_NICKNAME_BYTES {
            "too long"
        } else {
            return Ok(Some(nick.to_string()));
        };
        Err(SettingsError::BadNick {
            nick: nick.to_string(),
            problem,
        })
    }

    /// Creates the data directory (and checks it can be written) before anything is opened in it.
    pub(crate) fn prepare_data_dir(&self) -> Result<(), SettingsError> {
        let fail = |cause| SettingsError::DataDir {
            path: self.data_dir.clone(),
            cause,
        };
        std::fs::create_dir_all(&self.data_dir).map_err(fail)?;
        let probe = self.data_dir.join(".write-test");
        std::fs::write(&probe, b"").map_err(fail)?;
        std::fs::remove_file(&probe).map_err(fail)
    }

    /// The node configuration for a chat peer with these settings.
    pub(crate) fn node_config(&self) -> Config {
        Config {
            data_dir: self.data_dir.clone(),
            listen_addrs: self.listen.clone(),
            transport: Transport::Tcp,
            bootstrap: self.bootstrap.clone(),
            mdns: self.mdns,
            ..Config::default()
        }
    }
}

fn read_config(path: &Path) -> Result<ConfigFile, SettingsError> {
    let bytes = std::fs::read(path).map_err(|cause| SettingsError::ConfigUnreadable {
        path: path.to_path_buf(),
        cause,
    })?;
    ConfigFile::parse(&bytes).map_err(|e| match e {
        ConfigError::BadAddress(addr) => SettingsError::BadAddress {
            path: path.to_path_buf(),
            addr,
        },
        ConfigError::NotUtf8 | ConfigError::Invalid(_) => SettingsError::ConfigInvalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        },
    })
}

/// Every interface, on free ports, over TCP and QUIC.
fn default_listen() -> Vec<Multiaddr> {
    ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"]
        .iter()
        .filter_map(|addr| addr.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(config: &Path) -> CommonArgs {
        CommonArgs {
            data_dir: None,
            listen: Vec::new(),
            bootstrap: Vec::new(),
            no_mdns: false,
            config: Some(config.to_path_buf()),
        }
    }

    #[test]
    fn the_config_file_fills_in_what_flags_do_not_give() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "data-dir = \"/tmp/gv\"\nbootstrap = [\"/ip4/10.0.0.1/tcp/4001\"]\nmdns = false\nnick = \"ana\"\nrooms = [\"lobby\"]\n",
        )
        .unwrap();
        let settings = Settings::resolve(&args(&path)).unwrap();
        assert_eq!(settings.data_dir, PathBuf::from("/tmp/gv"));
        assert_eq!(settings.log_dir, PathBuf::from("/tmp/gv/logs"));
        assert_eq!(settings.bootstrap.len(), 1);
        assert!(!settings.mdns);
        assert_eq!(settings.nick.as_deref(), Some("ana"));
        assert_eq!(settings.listen, default_listen());

        let mut flags = args(&path);
        flags.data_dir = Some("/tmp/other".into());
        flags.bootstrap = vec!["/ip4/10.0.0.2/tcp/1".parse().unwrap()];
        let settings = Settings::resolve(&flags).unwrap();
        assert_eq!(settings.data_dir, PathBuf::from("/tmp/other"));
        assert_eq!(settings.bootstrap, flags.bootstrap);
    }

    #[test]
    fn a_nickname_flag_wins_over_the_config_file_and_must_fit_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "nick = \"ana\"\n").unwrap();
        let settings = Settings::resolve(&args(&path)).unwrap();
        assert_eq!(settings.chat_nick(None).unwrap().as_deref(), Some("ana"));
        assert_eq!(
            settings.chat_nick(Some("bo")).unwrap().as_deref(),
            Some("bo")
        );
        let error = settings.chat_nick(Some("")).unwrap_err().to_string();
        assert!(
            error.contains("is empty") && error.contains("--nick"),
            "{error}"
        );
        let long = "n".repeat(MAX_NICKNAME_BYTES + 1);
        let error = settings.chat_nick(Some(&long)).unwrap_err().to_string();
        assert!(error.contains("too long"), "{error}");
        std::fs::write(&path, "nick = \"\"\n").unwrap();
        let settings = Settings::resolve(&args(&path)).unwrap();
        assert!(
            settings.chat_nick(None).is_err(),
            "the config file's is checked too"
        );
    }

    #[test]
    fn a_bad_config_file_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        for (text, expected) in [
            ("colour = \"red\"", "unknown field"),
            ("mdns = \"yes\"", "invalid type"),
            ("bootstrap = [\"not an address\"]", "not a multiaddr"),
            ("data-dir = ", "invalid"),
        ] {
            std::fs::write(&path, text).unwrap();
            let error = Settings::resolve(&args(&path)).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
            assert!(error.contains("config.toml"), "{error}");
        }
        let missing = dir.path().join("missing.toml");
        let error = Settings::resolve(&args(&missing)).unwrap_err().to_string();
        assert!(error.contains("cannot read config file"), "{error}");
    }
}
