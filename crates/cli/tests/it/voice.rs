//! Voice notes (issue 17, decision 0046): a voice note made in the test
//! (espeak-ng speech, encoded to OGG/Opus as Telegram sends them) arrives
//! on a chat channel; the host saves it in the session's inbox; the runner
//! in its sandbox names it to the host's route on the proxy socket, and
//! the host posts its own copy to the owner's OpenAI-compatible
//! transcription endpoint (a loopback server playing it) with the key from
//! its own environment. What the sandbox can ask the route directly is
//! tried too: only inbox files, each transcribed once. The transcript reaches the model's prompt with its marker;
//! the key never reaches the sandbox's side. Without an endpoint, or when
//! it fails, the model is told why instead, and the turn still runs.

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use pinch_channels::fake::Sent;
use pinch_channels::{AckOutcome, InboundAttachment};
use pinch_web::testing::{header, serve, Answer};

const WAIT: Duration = Duration::from_secs(60);
const KEY: &str = "sk-voice-test-91c2";
const SAID: &str = "Remind me to call the landlord on Friday.";

fn endpoint(path: &str, _port: u16) -> Answer {
    Some(match path {
        "/v1/audio/transcriptions" => (
            200,
            header("content-type", "application/json"),
            serde_json::json!({ "text": SAID }).to_string().into_bytes(),
        ),
        "/broken/v1/audio/transcriptions" => (
            500,
            header("content-type", "application/json"),
            br#"{"error":{"message":"the model is overloaded"}}"#.to_vec(),
        ),
        _ => (404, vec![], vec![]),
    })
}

/// Speech as Telegram sends a voice note: OGG/Opus.
fn voice_note(dir: &Path) -> Vec<u8> {
    let (wav, ogg) = (dir.join("note.wav"), dir.join("note.ogg"));
    let run = |cmd: &mut std::process::Command, what: &str| {
        let out = cmd.output().unwrap_or_else(|e| {
            panic!("{what} is needed for this test (scripts/deps --test installs it): {e}")
        });
        assert!(out.status.success(), "{what}: {out:?}");
    };
    run(
        std::process::Command::new("espeak-ng")
            .arg("-w")
            .arg(&wav)
            .arg("remind me to call the landlord on friday"),
        "espeak-ng",
    );
    run(
        std::process::Command::new("opusenc")
            .arg("--quiet")
            .arg(&wav)
            .arg(&ogg),
        "opusenc (opus-tools)",
    );
    let bytes = std::fs::read(&ogg).unwrap();
    assert!(bytes.starts_with(b"OggS"), "an Ogg file");
    bytes
}

/// Sends `n` voice notes (no text, as a phone sends them), one after the
/// other's reply, to a host in `dir`; then `probe` gets the session's
/// proxy socket (as the sandbox sees it) while the host still runs; the
/// replies.
fn send_n(
    dir: &Path,
    voice: Option<pinch_web::voice::Endpoint>,
    audio: &[u8],
    n: usize,
    probe: &dyn Fn(&Path),
) -> Vec<String> {
    let mut cfg = with_script(
        host_config(dir, any_sandbox()),
        "default_reply = \"heard: {text}\"\n",
    );
    cfg.web.voice = voice;
    let data = cfg.data_dir.clone();
    let cell = fake_chat(&mut cfg);
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let chat = cell.get().unwrap().clone();
    let mut replies = Vec::new();
    for i in 0..n {
        let mut msg = fake_chat_msg(&format!("m{i}"), "");
        msg.attachments = vec![InboundAttachment {
            name: "voice.ogg".into(),
            mime: Some("audio/ogg".into()),
            size: audio.len() as u64,
            data: Some(audio.to_vec()),
        }];
        let out = rt.block_on(chat.send(msg));
        assert!(
            matches!(out, AckOutcome::Stored { routed: 1, .. }),
            "{out:?}"
        );
        let seen: Vec<String> = replies.clone();
        let fresh = |s: &Sent| matches!(s, Sent::Message { platform_message_id, .. } if !seen.contains(platform_message_id));
        match rt.block_on(chat.wait_for(WAIT, fresh)) {
            Some(Sent::Message {
                platform_message_id,
                ..
            }) => replies.push(platform_message_id),
            _ => panic!("no reply {i}; sent: {:#?}", chat.sent()),
        }
    }
    let replies: Vec<String> = replies
        .iter()
        .map(|id| {
            chat.sent()
                .iter()
                .find(|s| matches!(s, Sent::Message { platform_message_id, .. } if platform_message_id == id))
                .map(|s| s.text().to_owned())
                .unwrap()
        })
        .collect();
    let s = rt.block_on(host.sessions()).remove(0);
    probe(&data.join("run/proxy").join(&s.id).join("llm.sock"));
    rt.block_on(host.shutdown()).unwrap();
    replies
}

/// POSTs `body` to the voice route on `sock`: the whole answer.
fn ask_route(sock: &Path, body: &str) -> String {
    post_to_proxy(sock, "/_pinch/voice/transcribe", body)
}

fn send(dir: &Path, voice: Option<pinch_web::voice::Endpoint>, audio: &[u8]) -> String {
    send_n(dir, voice, audio, 1, &|_| {}).remove(0)
}

fn at(port: u16, path: &str) -> pinch_web::voice::Endpoint {
    pinch_web::voice::Endpoint {
        url: format!("http://127.0.0.1:{port}{path}"),
        model: "whisper-1".into(),
        key: Some(pinch_web::search::Key::new(KEY)),
        language: None,
        timeout: Duration::from_secs(20),
        per_minute: 10,
    }
}

#[test]
fn a_voice_note_is_transcribed_by_the_owners_endpoint_before_the_turn() {
    let tmp = tempfile::tempdir().unwrap();
    let audio = voice_note(tmp.path());
    let site = serve(endpoint);
    let host_dir = tempfile::tempdir().unwrap();
    // What the sandbox could ask the route directly: the same note again
    // (its transcript is kept: the endpoint is not asked twice), a host
    // file, a way out of the inbox, a file that is not there.
    let probe = |sock: &Path| {
        let again = ask_route(sock, r#"{"path":"/workspace/inbox/m0/voice.ogg"}"#);
        assert!(
            again.starts_with("HTTP/1.1 200") && again.contains(SAID),
            "{again}"
        );
        let host_file = ask_route(sock, r#"{"path":"/etc/passwd"}"#);
        assert!(
            host_file.starts_with("HTTP/1.1 403") && host_file.contains("only files people sent"),
            "{host_file}"
        );
        let out = ask_route(
            sock,
            r#"{"path":"/workspace/inbox/../../../../etc/passwd"}"#,
        );
        assert!(
            out.starts_with("HTTP/1.1 403") && out.contains("not a plain path inside the inbox"),
            "{out}"
        );
        // The same file spelt another way is the same file: not paid again.
        let spelt = ask_route(sock, r#"{"path":"/workspace/inbox/m0/./voice.ogg"}"#);
        assert!(
            spelt.starts_with("HTTP/1.1 200") && spelt.contains(SAID),
            "{spelt}"
        );
        // What another agent sent is not a person's voice note.
        for spelt in [
            "a2a-s-1/voice.ogg",
            "./a2a-s-1/voice.ogg",
            ".//a2a-s-1/./voice.ogg",
        ] {
            let a2a = ask_route(sock, &format!(r#"{{"path":"/workspace/inbox/{spelt}"}}"#));
            assert!(
                a2a.starts_with("HTTP/1.1 403") && a2a.contains("came from another agent"),
                "{spelt}: {a2a}"
            );
        }
        let none = ask_route(sock, r#"{"path":"/workspace/inbox/m0/other.ogg"}"#);
        assert!(
            none.starts_with("HTTP/1.1 403") && none.contains("is missing"),
            "{none}"
        );
        assert!(
            !none.contains("/tmp/"),
            "the host's paths stay on the host: {none}"
        );
    };
    let reply = send_n(
        host_dir.path(),
        Some(at(site.port, "/v1/audio/transcriptions")),
        &audio,
        1,
        &probe,
    )
    .remove(0);
    assert_eq!(
        reply,
        format!("heard: [voice note voice.ogg, transcribed]: {SAID}")
    );
    // What the endpoint got: the key as a bearer token, and a multipart
    // form with the model and the voice note byte for byte, named so the
    // API reads its format.
    let heads = site.heads.lock().unwrap().clone();
    let bodies = site.bodies.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "asked once, though asked twice: {heads:?}");
    assert!(
        heads[0].starts_with("POST /v1/audio/transcriptions "),
        "{}",
        heads[0]
    );
    assert!(
        heads[0].contains(&format!("authorization: bearer {KEY}")),
        "{}",
        heads[0]
    );
    assert!(
        heads[0].contains("content-type: multipart/form-data; boundary="),
        "{}",
        heads[0]
    );
    let body = &bodies[0];
    let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    assert!(
        has(b"name=\"model\"\r\n\r\nwhisper-1\r\n"),
        "the model field"
    );
    assert!(
        has(b"name=\"file\"; filename=\"voice.ogg\"\r\nContent-Type: audio/ogg\r\n\r\n"),
        "the file part's head: {}",
        String::from_utf8_lossy(&body[..body.len().min(600)])
    );
    assert!(has(&audio), "the voice note itself, byte for byte");
    assert!(has(b"OpusHead"), "Opus, as Telegram sends voice notes");
    // The key never reached the sandbox's side: not in runner.json, the
    // session DBs, or any log.
    assert_eq!(
        files_holding(host_dir.path(), KEY),
        Vec::<std::path::PathBuf>::new(),
        "the transcription key is in these files"
    );
}

/// No endpoint, or one that fails: the turn runs, and the model is told
/// why the voice note has no transcript (so it can tell the person).
#[test]
fn a_voice_note_without_a_transcript_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let audio = voice_note(tmp.path());
    let reply = send(tempfile::tempdir().unwrap().path(), None, &audio);
    assert!(
        reply.starts_with("heard: [voice note voice.ogg: not transcribed")
            && reply.contains("[voice] url in pinch.toml"),
        "{reply}"
    );
    let site = serve(endpoint);
    let reply = send(
        tempfile::tempdir().unwrap().path(),
        Some(at(site.port, "/broken/v1/audio/transcriptions")),
        &audio,
    );
    assert!(
        reply.starts_with("heard: [voice note voice.ogg could not be transcribed: the transcription endpoint answered 500")
            && reply.contains("its message is in the host's log")
            && !reply.contains("overloaded"),
        "the endpoint's own words stay on the host: {reply}"
    );
    // The group's rate: one a minute here; the second note is refused
    // before it is read, and the model is told why.
    let mut one = at(site.port, "/v1/audio/transcriptions");
    one.per_minute = 1;
    let replies = send_n(
        tempfile::tempdir().unwrap().path(),
        Some(one),
        &audio,
        2,
        &|_| {},
    );
    assert_eq!(
        replies[0],
        format!("heard: [voice note voice.ogg, transcribed]: {SAID}")
    );
    assert!(
        replies[1].contains("could not be transcribed: refused: too many voice notes")
            && replies[1].contains("[voice] per_minute"),
        "{replies:?}"
    );
}
