//! The channel suite every adapter passes (issue 20): the same steps,
//! through the real `pinch host` daemon, against each platform — a real
//! server where one runs here (mail, Matrix), a fake of the platform's
//! API where it cannot (Telegram, Discord, Slack, WhatsApp, Signal). Each
//! adapter's test module describes its world with [`World`] and runs the
//! steps with [`channel_suite!`]; what a platform cannot do (files on a
//! webhook without attachments) it says in [`World::files`].
//!
//! The steps (their scripted answers are in `platform::SHARED_RULES`):
//! - **reply**: a message from the owner gets exactly one reply, stored
//!   once, whose text names the message (`suite echo: …`).
//! - **kill -9**: the host is killed after a reply; a message sent while it
//!   is down and one after its restart are each answered once, and nothing
//!   before is stored or answered again.
//! - **files**: a file sent in is read by the agent; a file the agent makes
//!   reaches the platform with its bytes.

use super::platform::{daemon, delivered, rows, Setup, WAIT};
use super::{wait_for, Daemon};

/// What pinch sent to the conversation: its text and files (name, bytes).
#[derive(Clone, Debug, Default)]
pub struct Reply {
    pub text: String,
    pub files: Vec<(String, Vec<u8>)>,
}

/// One platform as the suite drives it.
pub trait World {
    /// The data dir and configuration `pinch host` runs on.
    fn setup(&self) -> &Setup;
    /// Returns once the freshly started daemon's adapter is connected, so
    /// that a message sent now is handed to it (default: at once).
    fn ready(&self) {}
    /// The owner says `text` in the direct conversation, with `file`
    /// (name, bytes) attached; returns the id the host stores the message
    /// under. Called while the daemon is down too: the platform keeps the
    /// message for it (a fake queues it; a sender retries).
    fn say(&self, text: &str, file: Option<(&str, &[u8])>) -> String;
    /// Everything pinch has sent to that conversation so far, in order.
    fn replies(&self) -> Vec<Reply>;
    /// Whether files go both ways on this platform.
    fn files(&self) -> bool {
        true
    }
}

/// Starts the daemon and waits until the world says it is connected.
fn start(w: &dyn World) -> Daemon {
    let d = daemon(w.setup());
    w.ready();
    d
}

/// The replies whose text holds `needle`.
fn answers(w: &dyn World, needle: &str) -> Vec<Reply> {
    w.replies()
        .into_iter()
        .filter(|r| r.text.contains(needle))
        .collect()
}

/// Waits for the one reply holding `needle`.
fn wait_answer(w: &dyn World, needle: &str) -> Reply {
    let deadline = std::time::Instant::now() + WAIT;
    while answers(w, needle).is_empty() {
        if std::time::Instant::now() > deadline {
            let log = w.setup().log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "timed out waiting for the reply to {needle:?}; replies: {:?}; the daemon's log ends:\n{}",
                w.replies(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    answers(w, needle).remove(0)
}

/// Step **reply** and step **kill -9**.
pub fn replies_once_and_a_killed_host_loses_and_repeats_nothing(w: &dyn World) {
    let s = w.setup();
    let mut d = start(w);
    let id1 = w.say("suite-1 hello", None);
    let r = wait_answer(w, "suite-1");
    assert!(r.text.contains("suite echo: "), "{r:?}");

    // Killed once the reply is recorded as delivered: a reply sent but not
    // yet recorded is sent again after a restart (at least once), which
    // only a platform's own idempotency could hide.
    wait_for("the first reply recorded as delivered", WAIT, || {
        delivered(&s.data) >= 1
    });
    d.0.kill().unwrap();
    d.0.wait().unwrap();
    let id2 = w.say("suite-2 sent while down", None);
    let _d = start(w);
    wait_answer(w, "suite-2");
    // After that answer: sent at once, the two could be one turn (the host
    // batches what arrives together), answered by one reply.
    let id3 = w.say("suite-3 after the restart", None);
    wait_answer(w, "suite-3");
    // A last message answered after both: anything repeated from before
    // would have been sent by then (one conversation is answered in order).
    let id4 = w.say("suite-4 last", None);
    wait_answer(w, "suite-4");
    for (n, id) in [(1, &id1), (2, &id2), (3, &id3), (4, &id4)] {
        assert_eq!(rows(&s.data, id), 1, "message {n} ({id}) stored once");
        let a = answers(w, &format!("suite-{n}"));
        assert_eq!(a.len(), 1, "message {n} answered once: {a:?}");
    }
}

/// Step **files**.
pub fn files_go_both_ways(w: &dyn World) {
    if !w.files() {
        return;
    }
    let _d = start(w);
    w.say(
        "please read the attachment",
        Some(("notes.txt", b"the secret word is tangerine")),
    );
    let r = wait_answer(w, "tangerine");
    assert!(r.text.contains("the file says:"), "{r:?}");
    w.say("send me the report", None);
    let found = wait_for_file(w, "report.txt");
    assert_eq!(found, b"numbers: 1 2 3", "the file's bytes");
}

fn wait_for_file(w: &dyn World, name: &str) -> Vec<u8> {
    let mut got = None;
    wait_for(&format!("the file {name}"), WAIT, || {
        got = w
            .replies()
            .into_iter()
            .flat_map(|r| r.files)
            .find(|(n, _)| n == name)
            .map(|(_, b)| b);
        got.is_some()
    });
    got.unwrap()
}

/// The suite's tests for a world: `channel_suite!(make_world)` in a
/// platform's test module, `make_world()` returning `Option<impl World>`
/// (`None` when the platform's server cannot run here: skipped).
#[macro_export]
macro_rules! channel_suite {
    ($make:expr) => {
        #[test]
        fn suite_replies_once_and_a_killed_host_loses_and_repeats_nothing() {
            let Some(w) = $make() else { return };
            $crate::common::suite::replies_once_and_a_killed_host_loses_and_repeats_nothing(&w);
        }

        #[test]
        fn suite_files_go_both_ways() {
            let Some(w) = $make() else { return };
            $crate::common::suite::files_go_both_ways(&w);
        }
    };
}

/// The file parts of a `multipart/form-data` body (as the fakes record it:
/// text, lossily decoded): (file name, bytes). The suite's files are text.
pub fn multipart_files(raw: &str) -> Vec<(String, Vec<u8>)> {
    let Some(boundary) = raw.lines().next().map(str::trim) else {
        return Vec::new();
    };
    raw.split(boundary)
        .filter_map(|part| {
            let (head, body) = part.split_once("\r\n\r\n")?;
            let name = head
                .split("filename=\"")
                .nth(1)?
                .split('"')
                .next()?
                .to_owned();
            let body = body.strip_suffix("\r\n").unwrap_or(body);
            Some((name, body.as_bytes().to_vec()))
        })
        .collect()
}

/// The text fields (`name` → value) of a `multipart/form-data` body.
pub fn multipart_field(raw: &str, field: &str) -> Option<String> {
    let boundary = raw.lines().next()?.trim();
    raw.split(boundary).find_map(|part| {
        let (head, body) = part.split_once("\r\n\r\n")?;
        (head.contains(&format!("name=\"{field}\"")) && !head.contains("filename="))
            .then(|| body.strip_suffix("\r\n").unwrap_or(body).to_owned())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn multipart_parts_are_read() {
        let raw = "--xx\r\nContent-Disposition: form-data; name=\"chat_id\"\r\n\r\n42\r\n--xx\r\nContent-Disposition: form-data; name=\"document\"; filename=\"r.txt\"\r\nContent-Type: text/plain\r\n\r\nnumbers: 1 2 3\r\n--xx--\r\n";
        assert_eq!(
            super::multipart_files(raw),
            vec![("r.txt".to_owned(), b"numbers: 1 2 3".to_vec())]
        );
        assert_eq!(
            super::multipart_field(raw, "chat_id").as_deref(),
            Some("42")
        );
        assert_eq!(super::multipart_field(raw, "nope"), None);
    }
}
