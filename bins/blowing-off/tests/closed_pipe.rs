//! The `blowing-off` binary with stdout or stderr connected to a pipe nobody reads any
//! more (`blowing-off device list | head -1`): every command that prints ends quietly with
//! the documented exit status 141, within a bounded time, and never panics (101) or hangs,
//! whether the write that finds the pipe closed is the command's output, an error
//! message, or a log line written by a database worker thread (`-v`).

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use goodies_client::{json_object, BlowingOffClient, EntityId};
use serde_json::json;

/// The documented exit status for a closed stdout or stderr (docs/CLIENT.md).
const CLOSED_PIPE: i32 = 141;

/// How long any command may take, closed pipe or not.
const BOUND: Duration = Duration::from_secs(10);

/// Devices in the mirror: their table and JSON are far larger than a pipe's buffer
/// (64 KiB on Linux), so a write really meets the closed pipe.
const DEVICES: usize = 2_000;

/// A local mirror with a home, a room, `devices` devices, and a connection setting
/// (offline: nothing is sent). Returns the ids of the room and of one device.
fn seed(db: &Path, devices: usize) -> (EntityId, EntityId) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = BlowingOffClient::open(db).await.expect("open the mirror");
        c.connect("http://127.0.0.1:9", Some("token"))
            .await
            .expect("connect");
        let home = c.create_home("Home").await.expect("home");
        let room = c
            .create_room(&home.id, "Hall", Some(0))
            .await
            .expect("room");
        let mut first = None;
        for i in 0..devices {
            let d = c
                .create_device(&room.id, &format!("lamp {i:04}"), "light", Some("Acme"))
                .await
                .expect("device");
            first.get_or_insert(d.id);
        }
        let first = first.expect("a device");
        c.merge_content(&first, json_object(json!({"power": "on"})))
            .await
            .expect("state");
        (room.id, first)
    })
}

/// Every command that prints, as arguments (each is also run with `--json`).
fn printing_commands(room: &EntityId, device: &EntityId) -> Vec<Vec<String>> {
    let (room, device) = (room.as_str().to_owned(), device.as_str().to_owned());
    let words = |w: &[&str]| w.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    vec![
        words(&["status"]),
        words(&["home", "show"]),
        words(&["room", "list"]),
        words(&["device", "list"]),
        vec!["device".into(), "list".into(), "--room-id".into(), room],
        vec!["device".into(), "state".into(), device.clone()],
        words(&["entity", "list"]),
        words(&["entity", "list", "--type", "device"]),
        vec!["entity".into(), "show".into(), device.clone()],
        vec!["entity".into(), "history".into(), device],
        words(&["entity", "search", "lamp"]),
        words(&["conflicts"]),
        words(&["outbox", "list"]),
    ]
}

/// The binary with `--db DB ARGS…`, without retries, stdin closed.
fn command(db: &Path, args: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_blowing-off"));
    let mut home = db.as_os_str().to_owned();
    home.push(".home");
    let home = std::path::PathBuf::from(home);
    std::fs::create_dir_all(&home).expect("home");
    c.env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env_remove("BLOWING_OFF_CONFIG")
        .env_remove("BLOWING_OFF_SERVER_URL")
        .env_remove("BLOWING_OFF_AUTH_TOKEN")
        .env_remove("BLOWING_OFF_CLIENT_ID")
        .current_dir(&home);
    c.arg("--db")
        .arg(db)
        .args(args)
        .env_remove("BLOWING_OFF_DB")
        .env_remove("RUST_LOG")
        .env("BLOWING_OFF_RETRIES", "0")
        .stdin(Stdio::null());
    c
}

/// A pipe whose read end is already closed: every write to the other end fails.
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    writer.into()
}

/// Waits for the child at most [`BOUND`]; kills it and fails when it takes longer.
fn finish(mut child: Child, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if start.elapsed() > BOUND {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {BOUND:?} (hung on a closed pipe)");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Everything readable from a captured stream (after the child ended).
fn drain(r: Option<impl Read>) -> String {
    let mut s = String::new();
    if let Some(mut r) = r {
        let _ = r.read_to_string(&mut s);
    }
    s
}

/// The exit status is the documented one and nothing panicked.
fn assert_quiet_end(status: ExitStatus, stderr: &str, what: &str) {
    assert!(
        !stderr.contains("panicked"),
        "{what}: panicked (status {status}):\n{stderr}"
    );
    assert_eq!(
        status.code(),
        Some(CLOSED_PIPE),
        "{what}: status {status}, stderr:\n{stderr}"
    );
}

#[test]
fn every_printing_command_ends_quietly_when_stdout_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mirror.db");
    let (room, device) = seed(&db, DEVICES);
    for args in printing_commands(&room, &device) {
        for json in [false, true] {
            let mut args = args.clone();
            if json {
                args.insert(0, "--json".into());
            }
            let what = format!("{args:?} > closed pipe");
            let child = command(&db, &args)
                .stdout(closed_pipe())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn");
            let mut child = child;
            let stderr = child.stderr.take();
            let status = finish(child, &what);
            assert_quiet_end(status, &drain(stderr), &what);
        }
    }
}

#[test]
fn a_reader_that_leaves_after_the_first_line_ends_the_listing_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mirror.db");
    let (room, _) = seed(&db, DEVICES);
    let lists = [
        vec!["device".to_owned(), "list".to_owned()],
        vec![
            "device".to_owned(),
            "list".to_owned(),
            "--room-id".to_owned(),
            room.as_str().to_owned(),
        ],
        vec!["entity".to_owned(), "list".to_owned()],
        vec!["entity".to_owned(), "search".to_owned(), "lamp".to_owned()],
    ];
    for args in lists {
        for json in [false, true] {
            let mut args = args.clone();
            if json {
                args.insert(0, "--json".into());
            }
            let what = format!("{args:?} | head -1");
            let mut child = command(&db, &args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn");
            // Read like `head -1`: up to the first newline, then go away.
            let mut out = child.stdout.take().expect("stdout");
            let mut first = Vec::new();
            let mut byte = [0u8; 1];
            while out.read(&mut byte).expect("read") == 1 && byte[0] != b'\n' {
                first.push(byte[0]);
            }
            drop(out);
            assert!(!first.is_empty(), "{what}: printed nothing");
            let stderr = child.stderr.take();
            let status = finish(child, &what);
            assert_quiet_end(status, &drain(stderr), &what);
        }
    }
}

#[test]
fn logging_and_errors_to_a_closed_stderr_end_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mirror.db");
    // Every write to stderr fails at once, so a small mirror does.
    let (room, device) = seed(&db, 20);
    let mut runs: Vec<Vec<String>> = Vec::new();
    for args in printing_commands(&room, &device) {
        for flags in [&["-v"][..], &["-vv"], &["-v", "--json"]] {
            let mut a: Vec<String> = flags.iter().map(|s| (*s).to_owned()).collect();
            a.extend(args.iter().cloned());
            runs.push(a);
        }
    }
    // An error message (here: an unknown entity) is a write to stderr as well.
    runs.push(vec![
        "entity".into(),
        "show".into(),
        "no-such-entity".into(),
    ]);
    for args in runs {
        let what = format!("{args:?} 2> closed pipe");
        // Several runs each: the log lines come from more than one thread, so the one
        // that meets the closed pipe first varies.
        for _ in 0..3 {
            let mut child = command(&db, &args)
                .stdout(Stdio::piped())
                .stderr(closed_pipe())
                .spawn()
                .expect("spawn");
            // Keep reading stdout so only stderr is closed.
            let out = child.stdout.take();
            let reader = std::thread::spawn(move || drain(out));
            let status = finish(child, &what);
            let _ = reader.join();
            // stderr is gone, so a panic would show only as status 101.
            assert_quiet_end(status, "", &what);
        }
    }
}

#[test]
fn help_and_version_to_a_closed_pipe_end_quietly() {
    // `blowing-off --help | head -1`: clap's own output meets the closed pipe.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mirror.db");
    for args in [
        &["--help"][..],
        &["-h"],
        &["device", "--help"],
        &["help", "room", "create"],
        &["--version"],
    ] {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let child = command(&db, &args)
            .stdout(closed_pipe())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let status = finish(child, &format!("{args:?}"));
        assert_eq!(status.code(), Some(CLOSED_PIPE), "{args:?}: {status:?}");
    }
}
