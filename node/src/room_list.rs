//! The names of the joined rooms, kept in the data directory so a restarted node rejoins them.
//! One name per line (names hold no whitespace); replaced atomically on every change.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::NodeError;

/// Name of the joined-rooms file inside the data directory.
pub const ROOM_LIST_FILE: &str = "joined-rooms.txt";

fn error(path: PathBuf) -> impl FnOnce(io::Error) -> NodeError {
    move |source| NodeError::RoomList { path, source }
}

/// The room names last saved in `dir`; none when the file does not exist yet.
pub(crate) fn load(dir: &Path) -> Result<Vec<String>, NodeError> {
    let path = dir.join(ROOM_LIST_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_string)
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(error(path)(e)),
    }
}

/// Replaces the saved list with `names`: a temporary file, made durable, then renamed over the
/// old one, so a crash leaves either list whole.
pub(crate) fn save(dir: &Path, names: &[String]) -> Result<(), NodeError> {
    let path = dir.join(ROOM_LIST_FILE);
    let temp = dir.join(format!("{ROOM_LIST_FILE}.tmp"));
    let mut text = String::new();
    for name in names {
        text.push_str(name);
        text.push('\n');
    }
    let mut file = File::create(&temp).map_err(error(temp.clone()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(error(temp.clone()))?;
    fs::rename(&temp, &path).map_err(error(path))?;
    // The rename is durable once the directory is.
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(error(dir.to_path_buf()))?;
    Ok(())
}
