//! `kill -9` of a real `grapevine chat --plain` process at random moments while it sends and
//! receives, then a restart from the same data directory, over and over. After every kill the
//! store loads, every message the process reported (its own once stored, others' once stored)
//! is in its history, and after restarts it catches up with what a peer said while it was dead.
//!
//! `GRAPEVINE_KILL_ROUNDS` sets the number of kills (default [`DEFAULT_ROUNDS`], short enough for
//! CI); `GRAPEVINE_KILL_SEED` replays a schedule (the seed is printed).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Peer, Sandbox};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

/// Kills in a CI run: under a second each on the 2-core machine.
const DEFAULT_ROUNDS: usize = 20;
/// The room both peers chat in.
const ROOM: &str = "crash";
/// The longest a victim lives once started, before its kill.
const MAX_LIFE: Duration = Duration::from_millis(1_500);
/// Share of rounds killed early, before the store is known to be loaded (during start-up).
const EARLY_KILL_SHARE: f64 = 0.2;
/// Share of rounds that first wait for the victim to catch up with what it missed while dead.
const CATCH_UP_SHARE: f64 = 0.4;
/// Longest pause between two bursts of lines typed into a peer.
const MAX_TYPING_PAUSE_MS: u64 = 40;
/// Most lines in one burst typed into the victim.
const MAX_BURST: usize = 5;

/// The messages one peer reported, by record id: `(author, body)`.
type Reported = BTreeMap<String, (String, String)>;

/// The seed from `GRAPEVINE_KILL_SEED`, or a fresh one.
fn seed() -> u64 {
    match std::env::var("GRAPEVINE_KILL_SEED") {
        Ok(seed) => seed.parse().expect("GRAPEVINE_KILL_SEED is a number"),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

fn rounds() -> usize {
    match std::env::var("GRAPEVINE_KILL_ROUNDS") {
        Ok(rounds) => rounds.parse().expect("GRAPEVINE_KILL_ROUNDS is a number"),
        Err(_) => DEFAULT_ROUNDS,
    }
}

/// Every `message` event among `lines`.
fn messages(lines: &[Value]) -> Reported {
    lines
        .iter()
        .filter(|v| v["event"] == "message")
        .map(|v| {
            let field = |key: &str| v[key].as_str().unwrap_or_default().to_string();
            (field("id"), (field("author"), field("body")))
        })
        .collect()
}

/// The public key printed by `grapevine id` (which creates the key on first use).
fn public_key(sandbox: &Sandbox, name: &str) -> String {
    let output = sandbox
        .run()
        .arg("--data-dir")
        .arg(sandbox.data_dir(name))
        .arg("id")
        .output()
        .expect("running grapevine id");
    assert!(output.status.success(), "grapevine id failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("public key:"))
        .map(|key| key.trim().to_string())
        .expect("grapevine id prints the public key")
}

/// What the test counts, for its closing line.
#[derive(Debug, Default)]
struct Tally {
    kills: usize,
    early_kills: usize,
    catch_ups: usize,
    own_sent: usize,
    steady_sent: usize,
    /// Damaged log tails set aside by a restart after a kill (`history` leaves them in place).
    set_aside: usize,
}

/// The peer that is killed over and over, and what is known about it.
struct Victim<'a> {
    sandbox: &'a Sandbox,
    key: String,
    bootstrap: String,
    /// Every message it reported before some kill: each must survive.
    reported: Reported,
    /// Its own messages as typed, to count duplicates in its history.
    typed: usize,
}

impl Victim<'_> {
    fn start(&self) -> Peer {
        self.sandbox
            .chat("victim", &["--room", ROOM, "--bootstrap", &self.bootstrap])
    }

    /// Types its next message.
    fn type_message(&mut self, peer: &mut Peer, round: usize) {
        peer.send(&format!("victim r{round} m{}", self.typed));
        self.typed += 1;
    }

    /// Checks its stored history after a kill: it loads, and holds every message reported so
    /// far, each once.
    fn check_history(&self, seed: u64, round: usize) -> Reported {
        let history = messages(&common::history_json(self.sandbox, "victim", ROOM));
        for (id, (author, body)) in &self.reported {
            match history.get(id) {
                Some(stored) => assert_eq!(
                    stored,
                    &(author.clone(), body.clone()),
                    "seed {seed}, round {round}: message {id} changed"
                ),
                None => panic!(
                    "seed {seed}, round {round}: message {body:?} by {author} was reported \
                     stored and is lost after the kill"
                ),
            }
        }
        let own: Vec<&str> = history
            .values()
            .filter(|(author, _)| *author == self.key)
            .map(|(_, body)| body.as_str())
            .collect();
        let distinct: BTreeSet<&str> = own.iter().copied().collect();
        assert_eq!(
            own.len(),
            distinct.len(),
            "seed {seed}, round {round}: a message of the victim is stored twice"
        );
        history
    }
}

#[test]
fn a_peer_killed_at_random_moments_keeps_every_stored_message_and_catches_up() {
    let seed = seed();
    let rounds = rounds();
    println!("kill test: seed {seed} (GRAPEVINE_KILL_SEED={seed} replays it), {rounds} kills");
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let sandbox = Sandbox::new();
    let mut steady = sandbox.chat("steady", &["--room", ROOM, "--nick", "steady"]);
    let mut victim = Victim {
        sandbox: &sandbox,
        key: public_key(&sandbox, "victim"),
        bootstrap: steady.addr(),
        reported: Reported::new(),
        typed: 0,
    };
    let mut tally = Tally::default();
    // Bodies the steady peer said while the victim was dead, not yet seen by the victim.
    let mut missed: BTreeSet<String> = BTreeSet::new();
    let mut stored = Reported::new();
    // Every line typed into the other peer.
    let mut steady_typed: Vec<String> = Vec::new();

    for round in 0..rounds {
        let mut peer = victim.start();
        // The first start creates the room, so that every kill leaves a history to check.
        let early = rng.random_bool(EARLY_KILL_SHARE) && round > 0;
        if early {
            tally.early_kills += 1;
        } else {
            // The store loaded: the process reports its address and its room.
            peer.wait_event("joined", &[("room", ROOM)]);
            if rng.random_bool(CATCH_UP_SHARE) {
                tally.catch_ups += 1;
                peer.wait_all("message", "body", missed.iter().cloned());
            }
        }
        let life = Duration::from_millis(rng.random_range(0..=MAX_LIFE.as_millis() as u64));
        let life = if early { life / 5 } else { life };
        let kill_at = Instant::now() + life;
        let mut said = 0;
        while Instant::now() < kill_at {
            // Lines come in bursts, so that some are always on their way when the kill comes.
            for _ in 0..rng.random_range(1..=MAX_BURST) {
                victim.type_message(&mut peer, round);
            }
            if rng.random_bool(0.5) {
                let body = format!("steady r{round} m{said}");
                steady.send(&body);
                steady_typed.push(body);
                said += 1;
            }
            std::thread::sleep(Duration::from_millis(
                rng.random_range(0..=MAX_TYPING_PAUSE_MS),
            ));
        }
        let lines = peer.kill();
        tally.kills += 1;
        let seen = messages(&lines);
        for (_, body) in seen.values() {
            missed.remove(body);
        }
        victim.reported.extend(seen);
        stored = victim.check_history(seed, round);
        for (_, body) in stored.values() {
            missed.remove(body);
        }

        // While the victim is dead the other peer goes on talking.
        for dead in 0..rng.random_range(1..=3) {
            let body = format!("steady r{round} while dead {dead}");
            steady.send(&body);
            steady.wait_event("message", &[("body", &body)]);
            steady_typed.push(body.clone());
            missed.insert(body);
        }
    }

    // Last start: no kill. The victim catches up with everything the other peer said, the other
    // peer with everything the victim stored, and both stop cleanly.
    let mut peer = victim.start();
    peer.wait_event("joined", &[("room", ROOM)]);
    let steady_said = messages(&steady.wait_all("message", "body", steady_typed));
    tally.steady_sent = steady_said.len();
    let not_stored = steady_said
        .iter()
        .filter(|(id, _)| !stored.contains_key(*id))
        .map(|(_, (_, body))| body.clone());
    peer.wait_all("message", "body", not_stored);
    let own_stored: Reported = victim
        .reported
        .iter()
        .filter(|(_, (author, _))| *author == victim.key)
        .map(|(id, message)| (id.clone(), message.clone()))
        .collect();
    steady.wait_all(
        "message",
        "body",
        own_stored.values().map(|(_, body)| body.clone()),
    );
    tally.own_sent = victim.typed;
    assert_eq!(peer.quit().code(), Some(0));
    assert_eq!(steady.quit().code(), Some(0));
    let history = messages(&common::history_json(&sandbox, "victim", ROOM));
    for id in steady_said.keys().chain(victim.reported.keys()) {
        assert!(
            history.contains_key(id),
            "seed {seed}: {id} missing at the end"
        );
    }
    let steady_history = messages(&common::history_json(&sandbox, "steady", ROOM));
    for id in own_stored.keys() {
        assert!(
            steady_history.contains_key(id),
            "seed {seed}: the victim's {id} never reached the other peer"
        );
    }
    tally.set_aside = std::fs::read_dir(sandbox.data_dir("victim").join("rooms"))
        .expect("the victim's rooms")
        .flatten()
        .flat_map(|room| {
            std::fs::read_dir(room.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter(|file| file.file_name().to_string_lossy().contains(".corrupt"))
        .count();
    println!(
        "kill test: seed {seed}: {} kills ({} during start-up), {} catch-ups checked; victim \
         typed {}, reported {} messages stored ({} its own), all found after the kills; other \
         peer said {}; {} damaged log tails set aside; {:.1} s",
        tally.kills,
        tally.early_kills,
        tally.catch_ups,
        tally.own_sent,
        victim.reported.len(),
        own_stored.len(),
        tally.steady_sent,
        tally.set_aside,
        started.elapsed().as_secs_f64()
    );
}
