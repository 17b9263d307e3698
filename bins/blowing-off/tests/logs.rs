//! Log output on stderr: `-v` shows this project's own events and none of the libraries'
//! noise, which only `-vvv` shows; colour codes only where `--color` (and, under `auto`,
//! the terminal and `NO_COLOR`) allow them.

use std::path::Path;
use std::process::Output;

mod support;

use support::{command, start_server, PASSWORD};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs the binary with extra environment variables.
fn run_env(db: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = command(db, args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run blowing-off")
}

fn connected_client(dir: &Path, url: &str) -> std::path::PathBuf {
    let db = dir.join("a.db");
    let out = run_env(
        &db,
        &["connect", "--server-url", url, "--password", PASSWORD],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    db
}

/// Whether a log line's level is painted (tracing's ANSI colour around the level name).
fn has_coloured_level(text: &str) -> bool {
    ["TRACE", "DEBUG", " INFO", " WARN", "ERROR"]
        .iter()
        .any(|level| text.contains(&format!("m{level}\u{1b}[0m")))
}

/// Targets of the log lines (the `target:` after the level), in order of appearance.
fn targets(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = strip_ansi(l);
            let rest = ["TRACE ", "DEBUG ", " INFO ", " WARN ", "ERROR "]
                .iter()
                .find_map(|lv| l.split_once(lv).map(|(_, r)| r.to_owned()))?;
            let target = rest.split(':').next()?.trim().to_owned();
            Some(target)
        })
        .collect()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

const OURS: [&str; 5] = [
    "blowing_off",
    "goodies_client",
    "goodies_store",
    "inbetweenies_proto",
    "inbetweenies_conflict",
];

fn is_ours(target: &str) -> bool {
    OURS.iter()
        .any(|c| target == *c || target.starts_with(&format!("{c}::")))
}

#[test]
fn one_v_shows_our_events_and_only_three_show_library_noise() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _stop) = start_server(dir.path());
    let db = connected_client(dir.path(), &url);
    let create = run_env(&db, &["house", "create", "--name", "Home"], &[]);
    assert_eq!(create.status.code(), Some(0), "{}", stderr(&create));

    let v = run_env(&db, &["-v", "sync"], &[]);
    assert_eq!(v.status.code(), Some(0), "{}", stderr(&v));
    let seen = targets(&stderr(&v));
    assert!(
        seen.iter().any(|t| t.starts_with("blowing_off")),
        "-v shows the sync's own events: {}",
        stderr(&v)
    );
    assert!(
        stderr(&v)
            .lines()
            .any(|l| l.contains("request answered") && l.contains("/api/v1/sync")),
        "-v shows each request with its status: {}",
        stderr(&v)
    );
    let noise: Vec<&String> = seen.iter().filter(|t| !is_ours(t)).collect();
    assert!(
        noise.is_empty(),
        "-v shows library targets {noise:?}: {}",
        stderr(&v)
    );

    let vvv = run_env(&db, &["-vvv", "sync"], &[]);
    assert_eq!(vvv.status.code(), Some(0), "{}", stderr(&vvv));
    let seen = targets(&stderr(&vvv));
    assert!(
        seen.iter().any(|t| !is_ours(t)),
        "-vvv shows the libraries' logs too: {seen:?}"
    );
}

#[test]
fn colour_follows_the_flag_and_no_color() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _stop) = start_server(dir.path());
    let db = connected_client(dir.path(), &url);

    // stderr is a pipe here: `auto` means no colour.
    let auto = run_env(&db, &["-v", "sync"], &[]);
    assert_eq!(auto.status.code(), Some(0), "{}", stderr(&auto));
    assert!(!stderr(&auto).is_empty(), "-v logged nothing");
    assert!(
        !stderr(&auto).contains('\u{1b}'),
        "colour codes on a pipe: {:?}",
        stderr(&auto)
    );

    let always = run_env(&db, &["-v", "--color", "always", "sync"], &[]);
    assert_eq!(always.status.code(), Some(0), "{}", stderr(&always));
    assert!(
        has_coloured_level(&stderr(&always)),
        "--color always paints the levels: {:?}",
        stderr(&always)
    );

    let never = run_env(&db, &["-v", "--color", "never", "sync"], &[]);
    assert!(!stderr(&never).contains('\u{1b}'), "{:?}", stderr(&never));

    // NO_COLOR turns `auto` off even on a terminal.
    let on_tty = |no_color: bool| {
        let line = format!(
            "{} --db '{}' -v sync",
            env!("CARGO_BIN_EXE_blowing-off"),
            db.display()
        );
        let mut c = std::process::Command::new("script");
        support::isolate(&mut c, &support::home_of(&db));
        c.args(["-q", "-e", "-c", &line, "/dev/null"])
            .env("BLOWING_OFF_RETRIES", "0")
            .stdin(std::process::Stdio::null());
        if no_color {
            c.env("NO_COLOR", "1");
        }
        let out = c.output().expect("run script (util-linux)");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tty = on_tty(false);
    assert!(
        has_coloured_level(&tty),
        "`auto` on a terminal paints the levels: {tty:?}"
    );
    let tty_no_color = on_tty(true);
    assert!(
        !has_coloured_level(&tty_no_color),
        "NO_COLOR: no colour on a terminal: {tty_no_color:?}"
    );
}
