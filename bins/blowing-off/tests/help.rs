//! Help and completions: every command's --help shows an example, with the global options
//! under their own heading; `completions` prints a script for bash, zsh, fish and
//! PowerShell. (Help to a closed pipe: closed_pipe.rs.)

use std::process::{Command, Stdio};

mod support;

fn bin() -> Command {
    let dir = std::env::temp_dir();
    let mut c = Command::new(env!("CARGO_BIN_EXE_blowing-off"));
    support::isolate(
        &mut c,
        &dir.join(format!("blowing-off-help-{}", std::process::id())),
    );
    c.stdin(Stdio::null());
    c
}

fn output(args: &[&str]) -> (i32, String, String) {
    let out = bin().args(args).output().expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every command path, from `blowing-off help`'s own list and each command's.
fn command_paths() -> Vec<Vec<String>> {
    fn subcommands(path: &[String]) -> Vec<String> {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let (code, out, err) = output(&args);
        assert_eq!(code, 0, "{args:?}: {err}");
        let mut names = Vec::new();
        let mut in_commands = false;
        for line in out.lines() {
            if line == "Commands:" {
                in_commands = true;
                continue;
            }
            if in_commands {
                if !line.starts_with("  ") {
                    break;
                }
                let name = line.split_whitespace().next().unwrap_or_default();
                if !name.is_empty() && name != "help" {
                    names.push(name.to_owned());
                }
            }
        }
        names
    }
    let mut all = vec![];
    let mut todo = vec![vec![]];
    while let Some(path) = todo.pop() {
        for name in subcommands(&path) {
            let mut p = path.clone();
            p.push(name);
            todo.push(p.clone());
            all.push(p);
        }
    }
    all
}

#[test]
fn every_help_has_an_example_and_global_options_have_their_own_heading() {
    let paths = command_paths();
    assert!(paths.len() >= 30, "only {} commands found", paths.len());
    for path in paths.iter().chain(std::iter::once(&vec![])) {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let (code, out, _) = output(&args);
        assert_eq!(code, 0);
        let example = out
            .lines()
            .skip_while(|l| !l.starts_with("Example"))
            .nth(1)
            .is_some_and(|l| l.starts_with("  blowing-off"));
        assert!(example, "{args:?} has no example:\n{out}");
        assert!(out.contains("Global options:"), "{args:?}:\n{out}");
        // Global options are listed under their heading only, not among the command's own.
        let own = out.split("Global options:").next().unwrap();
        assert!(!own.contains("--server-url <"), "{args:?}:\n{out}");
    }
}

#[test]
fn completions_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef blowing-off"),
        ("fish", "complete -c blowing-off"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let (code, out, err) = output(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(out.contains(marker), "{shell}: no {marker:?}");
        assert!(
            out.contains("sync-daemon") && out.contains("set-state"),
            "{shell}"
        );
    }
    let (code, _, err) = output(&["completions", "tcsh"]);
    assert_eq!(code, 2, "{err}");
}
