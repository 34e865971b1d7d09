//! A data directory on a disk that is read-only, fills up or turns read-only. A peer started on
//! a read-only data directory exits with status 2 and one line naming it, changing nothing. A
//! running peer whose disk fills up, or whose file system turns read-only as on a failing disk,
//! keeps running: a post that cannot be stored is answered by an `error` line and is never sent,
//! messages received are still shown, and once the disk has room again everything works as
//! before; stopped while received messages are unstored, it exits with 1 and gets them back at
//! its next start. No file is left damaged: after a failed file system is repaired (`e2fsck`),
//! every message stored before the failure is there.
//!
//! Each disk is a file system of its own mounted in a private mount namespace (`unshare
//! --mount`) that a `sleep` process holds; the test and the peers reach it through
//! `/proc/<pid>/root`, so the machine's own mounts are never touched. A tmpfs fills up; an ext4
//! image on a loop device (root only) is forced read-only while files on it are open. Root
//! ignores file modes, so a read-only file system is the only honest read-only directory for
//! root; without root the namespace is a user namespace, and the read-only start falls back to
//! `chmod` when even that is not allowed.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
/// The ext4 disk that is forced read-only: room for the journal, the peer's files and more.
const EXT4_IMAGE_BYTES: u64 = 8 << 20;
/// Messages each peer posts before the file system turns read-only.
const POSTS_BEFORE_THE_FAILURE: usize = 5;
/// Messages received while the file system is read-only.
const RECEIVED_ON_A_READ_ONLY_DISK: usize = 5;
/// How the OS names the failure of a write to a file system turned read-only: EROFS, or EIO
/// ([`IO_ERROR_CAUSE`]) when the file's data written before had not reached the disk yet.
const READ_ONLY_CAUSE: &str = "Read-only file system";
/// See [`READ_ONLY_CAUSE`].
const IO_ERROR_CAUSE: &str = "Input/output error";

/// What a [`SmallDisk`] is made of.
enum DiskKind {
    /// A tmpfs of this size (`1m`): quick to fill. It can be remounted read-only only while no
    /// file on it is open for writing, so a running peer's tmpfs is filled rather than remounted.
    Tmpfs(&'static str),
    /// An ext4 file system in an image file of this many bytes, on a loop device, mounted with
    /// `errors=remount-ro`: [`SmallDisk::force_read_only`] turns it read-only at any moment, open
    /// files and all, as the kernel does when a disk fails (root only).
    Ext4 { image: PathBuf, bytes: u64 },
}

/// A file system of its own in a private mount namespace, held by a `sleep` process.
struct SmallDisk {
    holder: Child,
    mount_point: PathBuf,
    /// The namespace is a user namespace too (not root): `nsenter` must enter it as well.
    user_namespace: bool,
    /// The image file of an ext4 disk; its loop device is detached when the disk is dropped.
    image: Option<PathBuf>,
}

impl SmallDisk {
    /// Mounts a file system of `kind` on `mount_point` (an empty directory) in a new mount
    /// namespace; the reason when this machine does not allow it.
    fn mount(mount_point: &Path, kind: DiskKind) -> Result<Self, String> {
        std::fs::create_dir_all(mount_point).map_err(|e| e.to_string())?;
        let user_namespace = !is_root();
        let (mount_args, image) = match kind {
            DiskKind::Tmpfs(size) => (
                vec![
                    "-t".into(),
                    "tmpfs".into(),
                    "-o".into(),
                    format!("size={size},mode=0700"),
                    "tmpfs".into(),
                ],
                None,
            ),
            DiskKind::Ext4 { image, bytes } => {
                if user_namespace {
                    return Err("not root: no loop device".to_string());
                }
                make_ext4_image(&image, bytes)?;
                (
                    vec![
                        "-o".into(),
                        EXT4_OPTIONS.into(),
                        image.display().to_string(),
                    ],
                    Some(image),
                )
            }
        };
        let mut command = Command::new("unshare");
        if user_namespace {
            command.arg("--map-root-user");
        }
        let mut holder = command
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("mount \"$@\" && echo mounted && exec sleep 600")
            .arg("sh")
            .args(mount_args)
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
                image,
            }),
            _ => {
                let _ = holder.kill();
                let output = holder.wait_with_output().map_err(|e| e.to_string())?;
                Err(format!(
                    "no file system of its own in a private mount namespace: {}",
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

    /// `nsenter` into the disk's mount namespace, to run what follows there.
    fn in_namespace(&self) -> Command {
        let mut command = Command::new("nsenter");
        command.arg(format!("--target={}", self.holder.id()));
        if self.user_namespace {
            command.arg("--user");
        }
        command.arg("--mount");
        command
    }

    /// Runs `mount` with `args` in the disk's namespace, on its mount point.
    fn run_mount(&self, args: &[&str]) {
        let status = self
            .in_namespace()
            .arg("mount")
            .args(args)
            .arg(&self.mount_point)
            .status()
            .expect("running nsenter");
        assert!(status.success(), "mount {args:?} on the small disk failed");
    }

    /// Remounts it with `options` (`ro`, `rw`).
    fn remount(&self, options: &str) {
        self.run_mount(&["-o", &format!("remount,{options}")]);
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

    /// The disk's entry in its namespace's mount table: the device (`/dev/loop3`) and the
    /// super block's options.
    fn mount_entry(&self) -> (String, Vec<String>) {
        let table = std::fs::read_to_string(format!("/proc/{}/mountinfo", self.holder.id()))
            .expect("reading the namespace's mount table");
        let mount_point = self.mount_point.display().to_string();
        // Fields: id parent major:minor root mount-point options [optional...] - type source
        // super-options.
        let entry = table
            .lines()
            .rfind(|line| line.split(' ').nth(4) == Some(mount_point.as_str()))
            .unwrap_or_else(|| panic!("{mount_point} not in the mount table: {table}"));
        let (_, after) = entry
            .split_once(" - ")
            .expect("a mount table line has a separator");
        let fields: Vec<&str> = after.split(' ').collect();
        let options = fields
            .get(2)
            .map(|options| options.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        (fields.get(1).unwrap_or(&"").to_string(), options)
    }

    /// Makes the kernel record an error on the ext4 file system, so that `errors=remount-ro`
    /// turns it read-only at once, as on a failing disk: every write fails from then on, with
    /// EROFS (or EIO, on a file whose written data had not reached the disk yet), open files'
    /// included.
    fn force_read_only(&self) {
        assert!(
            self.image.is_some(),
            "only an ext4 disk is forced read-only"
        );
        let (device, _) = self.mount_entry();
        let name = device.rsplit('/').next().unwrap_or_default();
        std::fs::write(format!("/sys/fs/ext4/{name}/trigger_fs_error"), "1")
            .unwrap_or_else(|e| panic!("triggering an error on {device}: {e}"));
        let (_, options) = self.mount_entry();
        assert!(
            options.iter().any(|o| o == "ro" || o == "emergency_ro"),
            "{device} still writable: {options:?}"
        );
    }

    /// Repairs the ext4 file system as an administrator would: unmounts it, checks it with
    /// `e2fsck -fy` and mounts it again; returns what `e2fsck` printed.
    fn repair(&self) -> String {
        let image = self.image.as_ref().expect("only an ext4 disk is repaired");
        let status = self
            .in_namespace()
            .arg("umount")
            .arg(&self.mount_point)
            .status()
            .expect("running nsenter");
        assert!(status.success(), "unmounting the small disk failed");
        wait_detached(image);
        let output = Command::new("e2fsck")
            .arg("-fy")
            .arg(image)
            .output()
            .expect("running e2fsck");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // 0: nothing to do; 1: errors corrected (the error the kernel recorded, at least).
        assert!(
            matches!(output.status.code(), Some(0 | 1)),
            "e2fsck left errors ({}): {report}",
            output.status
        );
        self.run_mount(&["-o", EXT4_OPTIONS, &image.display().to_string()]);
        report
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        // The namespace's mounts go with its last process, and a loop device mounted with
        // `-o loop` detaches itself when unmounted; detach it by hand if it has not.
        if let Some(image) = &self.image
            && !wait_detached(image)
        {
            for device in loop_devices(image) {
                let _ = Command::new("losetup").arg("-d").arg(&device).status();
                println!("{device} detached by hand");
            }
        }
    }
}

/// How an ext4 disk is mounted: on a loop device, read-only at the first error.
const EXT4_OPTIONS: &str = "loop,errors=remount-ro";

/// Creates `image`, `bytes` long, holding an empty ext4 file system.
fn make_ext4_image(image: &Path, bytes: u64) -> Result<(), String> {
    std::fs::File::create(image)
        .and_then(|file| file.set_len(bytes))
        .map_err(|e| format!("creating {}: {e}", image.display()))?;
    let output = Command::new("mkfs.ext4")
        .arg("-q")
        .arg(image)
        .output()
        .map_err(|e| format!("mkfs.ext4: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "mkfs.ext4: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

/// The loop devices `image` is attached to.
fn loop_devices(image: &Path) -> Vec<String> {
    let output = Command::new("losetup")
        .arg("-j")
        .arg(image)
        .output()
        .expect("running losetup");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once(':').map(|(device, _)| device.to_string()))
        .collect()
}

/// Waits, bounded, until no loop device holds `image`; whether none does.
fn wait_detached(image: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if loop_devices(image).is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The room logs (`rooms/<room>/epoch-<n>.log`) the process `pid` holds open.
fn open_room_logs(pid: u32) -> Vec<PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("listing the open files")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("epoch-") && name.ends_with(".log")
        })
        .collect()
}

/// Whether this machine can attach loop devices (root, with `/dev/loop-control`), and why not.
fn loop_devices_allowed() -> Result<(), String> {
    if !is_root() {
        return Err("not root, so no loop device".to_string());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err("no /dev/loop-control".to_string());
    }
    Ok(())
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

/// `count` message bodies: `what` and a number.
fn numbered(what: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{what} {i}")).collect()
}

/// bo sends [`numbered`] messages; returns them once ana has shown them all.
fn bo_sends_and_ana_shows(bo: &mut Peer, ana: &mut Peer, what: &str, count: usize) -> Vec<String> {
    let bodies = numbered(what, count);
    for body in &bodies {
        bo.send(body);
    }
    ana.wait_all("message", "body", bodies.clone());
    bodies
}

/// Starts bo, then ana on `data_dir` knowing bo, and waits until ana has bo in the room.
fn ana_and_bo_in_the_room(sandbox: &Sandbox, data_dir: &Path) -> (Peer, Peer) {
    let mut bo = sandbox.chat("bo", &["--room", ROOM, "--nick", "bo"]);
    let bo_id = bo.peer_id();
    let mut ana = start_ana(sandbox, data_dir, Some(&mut bo));
    ana.wait_for("bo in the room", |v| {
        v["event"] == "room_peers"
            && v["peers"]
                .as_array()
                .is_some_and(|peers| peers.iter().any(|p| p == bo_id.as_str()))
    });
    (ana, bo)
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
    let disk = SmallDisk::mount(&sandbox.path().join("disk"), DiskKind::Tmpfs(DISK_SIZE));
    let read_only = match disk {
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
    let disk = match SmallDisk::mount(&sandbox.path().join("disk"), DiskKind::Tmpfs(DISK_SIZE)) {
        Ok(disk) => disk,
        Err(reason) => {
            assert!(!is_root(), "root, and {reason}");
            println!("skipped: {reason}, and without root there is no other full disk");
            return;
        }
    };
    let data_dir = disk.path().join("ana");
    let (mut ana, mut bo) = ana_and_bo_in_the_room(&sandbox, &data_dir);
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
    let unstored = bo_sends_and_ana_shows(
        &mut bo,
        &mut ana,
        "to a full disk at the end",
        RECEIVED_AT_THE_END,
    );
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

#[test]
fn a_peer_whose_file_system_turns_read_only_keeps_running_and_its_store_survives_the_repair() {
    let sandbox = Sandbox::new();
    if let Err(reason) = loop_devices_allowed() {
        println!("skipped: {reason}, and without one there is no file system to force read-only");
        return;
    }
    let image = sandbox.path().join("disk.img");
    let disk = SmallDisk::mount(
        &sandbox.path().join("disk"),
        DiskKind::Ext4 {
            image: image.clone(),
            bytes: EXT4_IMAGE_BYTES,
        },
    )
    .unwrap_or_else(|reason| panic!("root with /dev/loop-control, and {reason}"));
    let data_dir = disk.path().join("ana");
    let (mut ana, mut bo) = ana_and_bo_in_the_room(&sandbox, &data_dir);

    // Stored before the failure: ana's posts (shown once stored) and bo's (shown once stored,
    // as no storage error has come yet).
    let ana_before = numbered("from ana before the failure", POSTS_BEFORE_THE_FAILURE);
    let bo_before = numbered("from bo before the failure", POSTS_BEFORE_THE_FAILURE);
    for (mine, theirs) in ana_before.iter().zip(&bo_before) {
        ana.send(mine);
        ana.wait_event("message", &[("body", mine.as_str())]);
        bo.send(theirs);
    }
    let stored_before: Vec<String> = ana_before.iter().chain(&bo_before).cloned().collect();
    ana.wait_all("message", "body", bo_before.clone());
    bo.wait_all("message", "body", ana_before.clone());

    // The file system turns read-only under the running peer, its room log open for writing.
    assert!(
        !open_room_logs(ana.pid()).is_empty(),
        "ana holds its room log open"
    );
    disk.force_read_only();
    ana.send("into a read-only disk");
    let refused = ana.wait_for("the post refused", |v| {
        v["event"] == "error"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("not sent:"))
    });
    println!("posted on a read-only file system: {refused}");
    let cause = [READ_ONLY_CAUSE, IO_ERROR_CAUSE]
        .into_iter()
        .find(|cause| {
            refused["message"]
                .as_str()
                .is_some_and(|m| m.contains(cause))
        })
        .unwrap_or_else(|| ana.fail(&format!("the error names no cause: {refused}")));
    ana.wait_for("one notice that the room cannot be stored", |v| {
        v["event"] == "error"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains("storing failed") && m.contains("not stored"))
    });
    // It keeps running: what bo sends is still shown, and the next post is refused too.
    let received_unstored = bo_sends_and_ana_shows(
        &mut bo,
        &mut ana,
        "to a read-only disk",
        RECEIVED_ON_A_READ_ONLY_DISK,
    );
    ana.send("still read-only");
    ana.wait_for("the second refusal", |v| {
        v["event"] == "error"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("not sent:") && m.contains(cause))
    });
    let refused_bodies = ["into a read-only disk", "still read-only"];

    // Stopped with received messages unstored: exit 1, saying why once.
    let (status, _) = ana.finish();
    let stderr = std::fs::read_to_string(sandbox.path().join("ana.stderr")).unwrap_or_default();
    println!("stopped on a read-only file system: {stderr}");
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    // One line: the logger, whose file is on the same disk, adds nothing of its own.
    let reason = stderr.trim();
    assert!(
        reason.lines().count() == 1 && reason.starts_with("grapevine: storing the rooms"),
        "says why, in one line: {stderr}"
    );
    assert!(
        [READ_ONLY_CAUSE, IO_ERROR_CAUSE]
            .iter()
            .map(|cause| reason.matches(cause).count())
            .sum::<usize>()
            == 1,
        "names the cause once: {reason}"
    );

    // Repaired by hand: every message stored before the failure is there, nothing is damaged.
    let fsck = disk.repair();
    println!("e2fsck -fy after the failure: {fsck}");
    assert_eq!(
        std::fs::read_dir(disk.path().join("lost+found"))
            .expect("reading lost+found")
            .count(),
        0,
        "e2fsck found no orphaned file"
    );
    let repaired = bodies(&common::history_json_in(&sandbox, &data_dir, ROOM));
    for body in &stored_before {
        assert!(repaired.contains(body), "{body:?} lost: {repaired:?}");
    }
    for body in refused_bodies {
        assert!(!repaired.contains(body), "{body:?} stored: {repaired:?}");
    }
    assert_eq!(
        set_aside_files(&data_dir),
        Vec::<PathBuf>::new(),
        "no damaged file"
    );

    // Started again: the store loads without a warning, and bo gives back what was missed.
    let mut ana = start_ana(&sandbox, &data_dir, Some(&mut bo));
    ana.wait_all("message", "body", received_unstored.clone());
    let (status, ana_lines) = ana.finish();
    assert_eq!(status.code(), Some(0));
    let warnings: Vec<&Value> = ana_lines
        .iter()
        .filter(|v| v["event"] == "warning")
        .collect();
    assert_eq!(warnings, Vec::<&Value>::new(), "the store loaded cleanly");
    let (status, bo_lines) = bo.finish();
    assert_eq!(status.code(), Some(0));

    let ana_history = bodies(&common::history_json_in(&sandbox, &data_dir, ROOM));
    for body in stored_before.iter().chain(&received_unstored) {
        assert!(ana_history.contains(body), "{body:?} lost: {ana_history:?}");
    }
    let bo_seen = bodies(&bo_lines);
    let bo_history = bodies(&common::history_json(&sandbox, "bo", ROOM));
    for body in refused_bodies {
        for (whose, bodies) in [
            ("ana's history", &ana_history),
            ("bo's output", &bo_seen),
            ("bo's history", &bo_history),
        ] {
            assert!(!bodies.contains(body), "{body:?} in {whose}");
        }
    }
    assert_eq!(
        set_aside_files(&data_dir),
        Vec::<PathBuf>::new(),
        "no damaged file"
    );
    drop(disk);
    assert_eq!(
        loop_devices(&image),
        Vec::<String>::new(),
        "the loop device is detached"
    );
}
