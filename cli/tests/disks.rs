//! A data directory on a disk that is read-only or fills up. A peer started on a read-only data
//! directory exits with status 2 and one line naming it, changing nothing. A running peer whose
//! disk fills up keeps running: a post that cannot be stored is answered by an `error` line and
//! is never sent, messages received are still shown, and once the disk has room again
//! everything works as before; stopped while received messages are unstored, it exits with 1
//! and gets them back at its next start. No file is left damaged.
//!
//! The small disk is a tmpfs mounted in a private mount namespace (`unshare --mount`) that a
//! `sleep` process holds; the test and the peers reach it through `/proc/<pid>/root`, so the
//! machine's own mounts are never touched. Root ignores file modes, so a read-only file system
//! is the only honest read-only directory for root; without root the namespace is a user
//! namespace, and the read-only start falls back to `chmod` when even that is not allowed.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use common::{Peer, Sandbox, WAIT};
use serde_json::Value;

/// The room of these tests.
const ROOM: &str = "disk";
/// The small disk: room for the device key, the logs and some records, quickly filled.
const DISK_SIZE: &str = "1m";
/// Messages received on a full disk just before the peer stops: more than the last page of
/// its log can take.
const RECEIVED_AT_THE_END: usize = 20;
/// Longest number of posts into a full disk before one must fail: the log file's last page
/// may still have room for a few records.
const MAX_POSTS_INTO_A_FULL_DISK: usize = 64;

/// A tmpfs of its own in a private mount namespace, held by a `sleep` process. (It can be
/// remounted read-only only while no file on it is open for writing, so a running peer's disk
/// is filled rather than remounted.)
struct SmallDisk {
    holder: Child,
    mount_point: PathBuf,
    /// The namespace is a user namespace too (not root): `nsenter` must enter it as well.
    user_namespace: bool,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` on `mount_point` (an empty directory) in a new mount namespace;
    /// the reason when this machine does not allow it.
    fn mount(mount_point: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(mount_point).map_err(|e| e.to_string())?;
        let user_namespace = !is_root();
        let mut command = Command::new("unshare");
        if user_namespace {
            command.arg("--map-root-user");
        }
        let mut holder = command
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(
                "mount -t tmpfs -o size=\"$1\",mode=0700 tmpfs \"$2\" && echo mounted \
                 && exec sleep 600",
            )
            .args(["sh", size])
            .arg(mount_point)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("unshare: {e}"))?;
        let stdout = holder.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(WAIT) {
            Ok(line) if line.trim() == "mounted" => Ok(Self {
                holder,
                mount_point: mount_point.to_path_buf(),
                user_namespace,
            }),
            _ => {
                let _ = holder.kill();
                let output = holder.wait_with_output().map_err(|e| e.to_string())?;
                Err(format!(
                    "no tmpfs in a private mount namespace: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ))
            }
        }
    }

    /// The mounted file system as every other process reaches it.
    fn path(&self) -> PathBuf {
        let inside = self
            .mount_point
            .strip_prefix("/")
            .expect("an absolute path");
        Path::new("/proc")
            .join(self.holder.id().to_string())
            .join("root")
            .join(inside)
    }

    /// Remounts it with `options` (`ro`, `rw`).
    fn remount(&self, options: &str) {
        let mut command = Command::new("nsenter");
        command.arg(format!("--target={}", self.holder.id()));
        if self.user_namespace {
            command.arg("--user");
        }
        let status = command
            .args(["--mount", "mount", "-o"])
            .arg(format!("remount,{options}"))
            .arg(&self.mount_point)
            .status()
            .expect("running nsenter");
        assert!(
            status.success(),
            "remounting the small disk {options} failed"
        );
    }

    /// Writes zeros into `filler` until the disk is full; returns the bytes written.
    fn fill(&self, filler: &Path) -> usize {
        let mut file = std::fs::File::create(filler).expect("creating the filler file");
        let chunk = [0u8; 4096];
        let mut written = 0;
        loop {
            match file.write(&chunk) {
                Ok(0) => return written,
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::StorageFull => return written,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A way to make a data directory read-only.
enum ReadOnly {
    /// A file system of its own, remounted read-only: the only way that stops root.
    Remount(SmallDisk),
    /// File modes (not for root, who ignores them).
    Chmod(PathBuf),
}

impl ReadOnly {
    fn data_dir(&self) -> PathBuf {
        match self {
            ReadOnly::Remount(disk) => disk.path().join("ana"),
            ReadOnly::Chmod(dir) => dir.clone(),
        }
    }

    fn set(&self, read_only: bool) {
        match self {
            ReadOnly::Remount(disk) => disk.remount(if read_only { "ro" } else { "rw" }),
            ReadOnly::Chmod(dir) => {
                let status = Command::new("chmod")
                    .arg("-R")
                    .arg(if read_only { "a-w" } else { "u+w" })
                    .arg(dir)
                    .status()
                    .expect("running chmod");
                assert!(status.success(), "chmod failed");
            }
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// The bodies of the `message` events among `lines`.
fn bodies(lines: &[Value]) -> BTreeSet<String> {
    lines
        .iter()
        .filter(|v| v["event"] == "message")
        .filter_map(|v| v["body"].as_str().map(str::to_string))
        .collect()
}

/// Every file under `dir` with its contents, for comparing a directory before and after.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("listing the data directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("reading a file");
                files.push((path, bytes));
            }
        }
    }
    files.sort();
    files
}

/// Every file under `dir` whose name says it holds damaged bytes set aside.
fn set_aside_files(dir: &Path) -> Vec<PathBuf> {
    snapshot(dir)
        .into_iter()
        .map(|(path, _)| path)
        .filter(|path| path.to_string_lossy().contains(".corrupt"))
        .collect()
}

/// Starts `ana` on `data_dir`, joined to [`ROOM`], connected to `bo` when given.
fn start_ana(sandbox: &Sandbox, data_dir: &Path, bo: Option<&mut Peer>) -> Peer {
    let mut args = vec!["--room", ROOM, "--nick", "ana"];
    let bootstrap;
    if let Some(bo) = bo {
        bootstrap = bo.addr();
        args.extend(["--bootstrap", &bootstrap]);
    }
    let mut ana = sandbox.chat_in("ana", data_dir, &args);
    ana.wait_event("joined", &[("room", ROOM)]);
    ana
}

/// Posts `body` from `ana` until a post fails; returns the bodies stored before it and the
/// `error` line of the failure.
fn post_until_refused(ana: &mut Peer, what: &str) -> (Vec<String>, Value) {
    let mut stored = Vec::new();
    for i in 0..MAX_POSTS_INTO_A_FULL_DISK {
        let body = format!("{what} {i}");
        ana.send(&body);
        let answer = ana.wait_for("the post stored or refused", |v| {
            (v["event"] == "message" && v["body"] == body.as_str())
                || (v["event"] == "error"
                    && v["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("not sent")))
        });
        if answer["event"] == "error" {
            return (stored, answer);
        }
        stored.push(body);
    }
    ana.fail(&format!(
        "{MAX_POSTS_INTO_A_FULL_DISK} posts stored on a full disk ({what})"
    ))
}

#[test]
fn a_peer_started_on_a_read_only_data_directory_exits_with_a_clear_reason_and_changes_nothing() {
    let sandbox = Sandbox::new();
    let read_only = match SmallDisk::mount(&sandbox.path().join("disk"), DISK_SIZE) {
        Ok(disk) => ReadOnly::Remount(disk),
        Err(reason) if !is_root() => {
            println!("{reason}; making the directory read-only with chmod instead");
            ReadOnly::Chmod(sandbox.data_dir("ana"))
        }
        Err(reason) => panic!("root, and {reason}: no way to make a read-only directory"),
    };
    let data_dir = read_only.data_dir();
    let mut ana = start_ana(&sandbox, &data_dir, None);
    ana.send("stored before");
    ana.wait_event("message", &[("body", "stored before")]);
    assert_eq!(ana.quit().code(), Some(0));
    let before = snapshot(&data_dir);

    read_only.set(true);
    let output = sandbox
        .run()
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--no-mdns", "--listen", common::LOOPBACK, "chat", "--plain"])
        .args(["--room", ROOM])
        .write_stdin("never stored\n")
        .output()
        .expect("running grapevine chat");
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("started on a read-only data directory: {stderr}");
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        output.stdout.is_empty(),
        "nothing runs: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    let cause = match read_only {
        ReadOnly::Remount(_) => "Read-only file system",
        ReadOnly::Chmod(_) => "Permission denied",
    };
    assert!(
        stderr.contains(&data_dir.display().to_string()) && stderr.matches(cause).count() == 1,
        "names the directory and the cause, once: {stderr}"
    );
    read_only.set(false);

    assert_eq!(snapshot(&data_dir), before, "no file changed");
    let history = common::history_json_in(&sandbox, &data_dir, ROOM);
    assert_eq!(
        bodies(&history),
        BTreeSet::from(["stored before".to_string()])
    );
}

#[test]
fn a_peer_whose_disk_fills_up_keeps_running_and_never_sends_what_it_cannot_store() {
    let sandbox = Sandbox::new();
    let disk = match SmallDisk::mount(&sandbox.path().join("disk"), DISK_SIZE) {
        Ok(disk) => disk,
        Err(reason) => {
            assert!(!is_root(), "root, and {reason}");
            println!("skipped: {reason}, and without root there is no other full disk");
            return;
        }
    };
    let data_dir = disk.path().join("ana");
    let mut bo = sandbox.chat("bo", &["--room", ROOM, "--nick", "bo"]);
    let bo_id = bo.peer_id();
    let mut ana = start_ana(&sandbox, &data_dir, Some(&mut bo));
    ana.wait_for("bo in the room", |v| {
        v["event"] == "room_peers"
            && v["peers"]
                .as_array()
                .is_some_and(|peers| peers.iter().any(|p| p == bo_id.as_str()))
    });
    ana.send("before the disk fills");
    ana.wait_event("message", &[("body", "before the disk fills")]);
    bo.wait_event("message", &[("body", "before the disk fills")]);

    // Full: once the log's last page is used up, posts are refused and never sent.
    let filler = disk.path().join("filler");
    let filled = disk.fill(&filler);
    assert!(filled > 0, "the disk had room to fill");
    let (mut stored, refused) = post_until_refused(&mut ana, "into a full disk");
    println!(
        "disk filled with {filled} bytes; {} posts still stored, then: {refused}",
        stored.len()
    );
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("No space left on device"),
        "the error names the cause: {refused}"
    );
    ana.send("still full");
    ana.wait_for("the second refusal", |v| {
        v["event"] == "error"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("not sent") && m.contains("No space left"))
    });
    ana.wait_for("one notice that the room cannot be stored", |v| {
        v["event"] == "error"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains("storing failed") && m.contains("not stored"))
    });
    // Receiving goes on: shown, though not stored yet.
    bo.send("to a full disk");
    ana.wait_event("message", &[("body", "to a full disk")]);

    // Room again: posts are stored and sent, and what was received meanwhile is stored too.
    std::fs::remove_file(&filler).expect("removing the filler");
    ana.send("after the disk has room");
    ana.wait_event("message", &[("body", "after the disk has room")]);
    bo.wait_event("message", &[("body", "after the disk has room")]);
    stored.push("after the disk has room".to_string());

    // Full again when the peer stops, with messages received and not stored: it says so and
    // exits with 1, and at the next start the other peer gives them back.
    disk.fill(&filler);
    let unstored: Vec<String> = (0..RECEIVED_AT_THE_END)
        .map(|i| format!("to a full disk at the end {i}"))
        .collect();
    for body in &unstored {
        bo.send(body);
    }
    ana.wait_all("message", "body", unstored.clone());
    let (status, _) = ana.finish();
    let stderr = std::fs::read_to_string(sandbox.path().join("ana.stderr")).unwrap_or_default();
    println!("stopped on a full disk: {stderr}");
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("storing the rooms")
            && stderr.matches("No space left on device").count() == 1,
        "says why, once: {stderr}"
    );
    std::fs::remove_file(&filler).expect("removing the filler");
    let kept = bodies(&common::history_json_in(&sandbox, &data_dir, ROOM));
    let lost: Vec<String> = unstored
        .iter()
        .filter(|body| !kept.contains(*body))
        .cloned()
        .collect();
    assert!(!lost.is_empty(), "some were not stored: {kept:?}");
    let mut ana = start_ana(&sandbox, &data_dir, Some(&mut bo));
    ana.wait_all("message", "body", lost);
    assert_eq!(ana.quit().code(), Some(0));
    let (status, bo_lines) = bo.finish();
    assert_eq!(status.code(), Some(0));
    let bo_seen = bodies(&bo_lines);

    let refused_bodies = |history: &BTreeSet<String>| -> Vec<String> {
        history
            .iter()
            .filter(|body| {
                body.starts_with("into a full disk") && !stored.contains(body)
                    || *body == "still full"
            })
            .cloned()
            .collect()
    };
    let ana_history = bodies(&common::history_json_in(&sandbox, &data_dir, ROOM));
    let bo_history = bodies(&common::history_json(&sandbox, "bo", ROOM));
    for body in stored.iter().chain(&unstored).chain(&[
        "before the disk fills".to_string(),
        "to a full disk".to_string(),
    ]) {
        assert!(ana_history.contains(body), "{body:?} lost: {ana_history:?}");
    }
    assert_eq!(refused_bodies(&ana_history), Vec::<String>::new());
    assert_eq!(refused_bodies(&bo_history), Vec::<String>::new());
    assert_eq!(refused_bodies(&bo_seen), Vec::<String>::new());
    assert_eq!(
        set_aside_files(&data_dir),
        Vec::<PathBuf>::new(),
        "no damaged file"
    );
}
