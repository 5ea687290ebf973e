//! Issue 18: `pinch chat` in a terminal. Under a real pseudo-terminal
//! (`script` from util-linux), the banner names the agent and its model
//! and a spinner says what the agent does until the reply, erased before
//! the reply is printed, and a streamed reply prints as it is written, once;
//! with output piped, no spinner and no streaming.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::common::*;

const SLOW: &str = "[[rule]]\ncontains = \"slow\"\nreply = \"done slowly\"\ndelay_ms = 1500\n\n\
    [[rule]]\ncontains = \"story\"\nreply = \"the crab wrote this reply in pieces\"\nstream_ms = 250\n";

/// Runs `pinch chat` with `line` on its input, through `script` (a pty)
/// when `tty`; returns everything it printed once `until` is there, and
/// how long after `first` appeared `until` did.
fn chat(tty: bool, line: &str, first: &str, until: &str) -> (String, Duration) {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("slow.toml");
    std::fs::write(&script, SLOW).unwrap();
    let cmd = format!(
        "{PINCH} chat --provider scripted --script {} --sandbox process --data-dir {}",
        script.display(),
        tmp.path().join("data").display()
    );
    let mut c = if tty {
        let mut c = std::process::Command::new("script");
        c.args(["-qec", &cmd, "/dev/null"]);
        c
    } else {
        let mut c = std::process::Command::new("sh");
        c.args(["-c", &cmd]);
        c
    };
    let mut child = c
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs pinch chat in a pseudo-terminal");
    let mut stdin = Some(child.stdin.take().unwrap());
    if let Some(i) = stdin.as_mut() {
        i.write_all(format!("{line}\n").as_bytes()).unwrap();
    }
    // Piped input is read to its end before it is sent (`pinch chat`'s
    // scripted mode): close it now. A terminal's stays open until the
    // reply is there.
    if !tty {
        stdin = None;
    }
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut readers = Vec::new();
    for mut pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let out = out.clone();
        readers.push(std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut first_at = None;
    while !String::from_utf8_lossy(&out.lock().unwrap()).contains(until) {
        if first_at.is_none() && String::from_utf8_lossy(&out.lock().unwrap()).contains(first) {
            first_at = Some(Instant::now());
        }
        assert!(
            Instant::now() < deadline,
            "no reply: {}",
            String::from_utf8_lossy(&out.lock().unwrap())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // End of input: `pinch chat` leaves.
    drop(stdin);
    assert!(child.wait().unwrap().success());
    for r in readers {
        r.join().unwrap();
    }
    let text = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
    let gap = first_at.map_or(Duration::ZERO, |t| t.elapsed());
    (text, gap)
}

#[test]
fn a_terminal_gets_a_banner_and_a_spinner_until_the_reply() {
    let (out, _) = chat(true, "slow please", "done slowly", "done slowly");
    assert!(
        out.contains(
            "pinch chat — agent `main` · the scripted provider (tests and demos, no model)"
        ),
        "{out}"
    );
    assert!(
        out.contains("thinking… 1s"),
        "the spinner counts the seconds: {out:?}"
    );
    let at = out.find("done slowly").unwrap();
    let before = &out[..at];
    let spun = before
        .rfind("thinking…")
        .expect("a spinner before the reply");
    assert!(
        before[spun..].contains("\r\x1b[2K"),
        "the spinner is erased before the reply: {:?}",
        &before[spun..]
    );
    let (piped, _) = chat(false, "slow please", "done slowly", "done slowly");
    assert!(
        !piped.contains("working") && !piped.contains("thinking"),
        "no spinner without a terminal: {piped:?}"
    );
}

/// The reply prints as the model writes it, and once: the final reply
/// adds only what the streamed text did not show. Piped, it prints whole.
#[test]
fn a_terminal_shows_the_reply_as_it_streams_and_once() {
    let (out, gap) = chat(true, "a story please", "the crab", "in pieces");
    assert_eq!(out.matches("the crab").count(), 1, "{out:?}");
    assert!(
        gap >= Duration::from_millis(500),
        "the first words were on screen {gap:?} before the last: {out:?}"
    );
    let (piped, gap) = chat(false, "a story please", "the crab", "in pieces");
    assert_eq!(
        piped.matches("the crab wrote this reply in pieces").count(),
        1,
        "{piped:?}"
    );
    assert!(
        gap < Duration::from_millis(200),
        "piped output is the final reply: {gap:?}"
    );
}
