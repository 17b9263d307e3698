//! The demo runs to the end: a conflict decided, the loser in history, both clients
//! converged with equal digests.

#[test]
fn the_demo_runs_and_converges() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_goodies-demo"))
        .output()
        .expect("run goodies-demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Told from Alice's side, in the client's words (never "local" or "remote").
    assert!(
        stdout.contains("the server kept the server's version (the other device's edit)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("this device's edit (alice): {") && !stdout.contains("remote"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"brightness\":20"),
        "the loser is not shown:\n{stdout}"
    );
    assert!(stdout.contains("converged:"), "{stdout}");
    let digests: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            l.starts_with("   server  ")
                || l.starts_with("   alice   ")
                || l.starts_with("   bob     ")
        })
        .map(|l| l.split_whitespace().last().unwrap_or_default())
        .collect();
    assert_eq!(digests.len(), 3, "{stdout}");
    assert!(
        digests.iter().all(|d| *d == digests[0] && !d.is_empty()),
        "{digests:?}"
    );
}
