//! The binary's own output: log lines as text without colour codes when standard error is not
//! a terminal, and as JSON objects with `--log-format json`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const HEARTH: &str = env!("CARGO_BIN_EXE_hearth");

/// Start `hearth serve` with `extra` flags, wait until it listens, stop it; its stderr.
fn serve_briefly(extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(HEARTH)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(extra)
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hearth serve starts");
    let stdout = child.stdout.take().unwrap();
    let listening = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.starts_with("hearth listening on "));
    assert!(listening, "the server started");
    child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    String::from_utf8(output.stderr).unwrap()
}

#[test]
fn logs_are_plain_text_off_a_terminal_and_json_when_asked() {
    let text = serve_briefly(&[]);
    assert!(text.contains("applied migration"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "no colour codes in a pipe: {text:?}"
    );

    let json = serve_briefly(&["--log-format", "json"]);
    let lines: Vec<&str> = json.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        let record: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|err| panic!("{line:?}: {err}"));
        assert!(record["level"].is_string(), "{record}");
        assert!(record["fields"].is_object(), "{record}");
    }
    assert!(!json.contains('\u{1b}'));
}
