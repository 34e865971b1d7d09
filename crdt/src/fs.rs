//! Small durability helpers shared by every module that persists files.
//!
//! They encapsulate the POSIX rules for crash-safe file replacement so that
//! callers (the room store, the identity key file) cannot forget a step:
//! write a temporary file next to the target, fsync it, rename it over the
//! target and fsync the directory so that the rename itself is durable.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Mode for files that only the owner may read or write.
pub(crate) const PRIVATE_FILE_MODE: u32 = 0o600;

/// Mode for directories that only the owner may list or enter.
pub(crate) const PRIVATE_DIR_MODE: u32 = 0o700;

/// Atomically replaces `path` with `bytes`.
///
/// After `Ok`, either the new contents are durable under `path`, and a crash
/// at any point before that leaves the previous contents (or no file) there,
/// plus possibly a leftover `<file name>.tmp` that readers should delete.
/// `mode` applies when the file is created (subject to the umask).
pub(crate) fn write_file_atomically(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_file_atomically_parts(path, &[bytes], mode)
}

/// Like [`write_file_atomically`], with the contents given as consecutive
/// parts, so callers can add a header without copying a large payload.
pub(crate) fn write_file_atomically_parts(
    path: &Path,
    parts: &[&[u8]],
    mode: u32,
) -> io::Result<()> {
    let tmp = tmp_path(path)?;
    let result = write_then_rename(&tmp, path, parts, mode);
    if result.is_err() {
        // Best effort: the temporary file is garbage now and is removed on the
        // next load anyway, so a failure to remove it is not worth reporting.
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_then_rename(tmp: &Path, path: &Path, parts: &[&[u8]], mode: u32) -> io::Result<()> {
    remove_if_exists(tmp)?;
    let mut file = create_new_file(tmp, mode)?;
    for part in parts {
        file.write_all(part)?;
    }
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, path)?;
    sync_dir(parent_dir(path))
}

/// The temporary name used by [`write_file_atomically`] for `path`: the file
/// name with `.tmp` appended, in the same directory (so `rename` is atomic).
pub(crate) fn tmp_path(path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    let mut tmp_name = OsString::from(name);
    tmp_name.push(".tmp");
    Ok(path.with_file_name(tmp_name))
}

/// The directory holding `path`; `.` for a bare file name.
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Creates a new file (failing if it exists) with the given unix mode.
pub(crate) fn create_new_file(path: &Path, mode: u32) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    set_mode(&mut options, mode);
    options.open(path)
}

#[cfg(unix)]
fn set_mode(options: &mut OpenOptions, mode: u32) {
    use std::os::unix::fs::OpenOptionsExt;
    options.mode(mode);
}

#[cfg(not(unix))]
fn set_mode(_options: &mut OpenOptions, _mode: u32) {}

/// Removes `path`, treating an already missing file as success.
pub(crate) fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Makes creations, renames and removals of entries in `dir` durable.
#[cfg(unix)]
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Makes creations, renames and removals of entries in `dir` durable.
///
/// Directories cannot be opened for syncing on this platform; its file
/// systems journal metadata, so this is a no-op.
#[cfg(not(unix))]
pub(crate) fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Creates `dir` and any missing ancestors with mode 0700, durably.
///
/// Existing directories are left as they are (their mode is not changed).
/// Each newly created directory's parent is fsynced so that the new entry
/// survives a crash.
pub(crate) fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut current = Some(dir);
    while let Some(d) = current {
        if d.as_os_str().is_empty() || d.try_exists()? {
            break;
        }
        missing.push(d);
        current = d.parent();
    }
    for d in missing.into_iter().rev() {
        match dir_builder().create(d) {
            Ok(()) => sync_dir(parent_dir(d))?,
            // Lost a race with another creator: fine, as long as it is a directory.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn dir_builder() -> fs::DirBuilder {
    #[allow(unused_mut)]
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(PRIVATE_DIR_MODE);
    }
    builder
}
