//! Transcription against a loopback server playing an OpenAI-compatible
//! `/v1/audio/transcriptions` endpoint: the form it receives, the key, the
//! transcript; and what is decided before a file is read — the group's
//! policy, the group's rate, the host's two turns — and the type.

use std::time::Duration;

use pinch_web::search::Key;
use pinch_web::testing::{header, serve, Answer};
use pinch_web::voice::{Endpoint, MAX_TRANSCRIPT};
use pinch_web::{FetchError, GroupPolicy, Settings, Web};

fn api(path: &str, _port: u16) -> Answer {
    Some(match path {
        "/v1/audio/transcriptions" => (
            200,
            header("content-type", "application/json"),
            br#"{"text":"  pay the rent on monday  "}"#.to_vec(),
        ),
        "/long/v1/audio/transcriptions" => (
            200,
            header("content-type", "application/json"),
            format!(r#"{{"text":"{}"}}"#, "a".repeat(MAX_TRANSCRIPT + 50)).into_bytes(),
        ),
        "/leaky/v1/audio/transcriptions" => (
            401,
            header("content-type", "application/json"),
            br#"{"error":{"message":"Incorrect API key provided: sk-vo***42"}}"#.to_vec(),
        ),
        _ => (404, vec![], vec![]),
    })
}

fn web(port: u16, path: &str, per_minute: u32) -> Web {
    Web::new(Settings {
        voice: Some(Endpoint {
            url: format!("http://127.0.0.1:{port}{path}"),
            model: "whisper-large-v3".into(),
            key: Some(Key::new("sk-voice-42")),
            language: Some("en".into()),
            timeout: Duration::from_secs(10),
            per_minute,
        }),
        ..Settings::default()
    })
    .unwrap()
}

#[tokio::test]
async fn a_file_is_posted_as_the_apis_form_and_its_transcript_returned() {
    let site = serve(api);
    let w = web(site.port, "/v1/audio/transcriptions", 10);
    let text = w
        .transcribe("voice", "audio/ogg", b"OggS-opus-bytes".to_vec())
        .await
        .unwrap();
    assert_eq!(text, "pay the rent on monday");
    let head = site.heads.lock().unwrap()[0].clone();
    let body = site.bodies.lock().unwrap()[0].clone();
    assert!(head.contains("authorization: bearer sk-voice-42"), "{head}");
    let body = String::from_utf8_lossy(&body);
    for part in [
        "name=\"model\"\r\n\r\nwhisper-large-v3\r\n",
        "name=\"language\"\r\n\r\nen\r\n",
        "name=\"response_format\"\r\n\r\njson\r\n",
        // A name without an extension is sent with its type's.
        "name=\"file\"; filename=\"audio.ogg\"\r\nContent-Type: audio/ogg\r\n\r\nOggS-opus-bytes\r\n",
    ] {
        assert!(body.contains(part), "{part:?} missing in {body}");
    }
    // A transcript is cut at MAX_TRANSCRIPT characters.
    let w = web(site.port, "/long/v1/audio/transcriptions", 10);
    let text = w.transcribe("a.mp3", "audio/mpeg", vec![1]).await.unwrap();
    assert_eq!(text.chars().count(), MAX_TRANSCRIPT);
    // The endpoint's own words (which may quote the key) are not returned.
    let w = web(site.port, "/leaky/v1/audio/transcriptions", 10);
    let e = w
        .transcribe("a.ogg", "audio/ogg", vec![1])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("answered 401") && e.contains("key_env"), "{e}");
    assert!(!e.contains("sk-vo"), "{e}");
}

#[tokio::test]
async fn policy_rate_turns_and_type_are_checked() {
    let none = Web::new(Settings::default()).unwrap();
    let all = GroupPolicy::default();
    assert!(matches!(
        none.voice_admit("main", &all),
        Err(FetchError::Unavailable(m)) if m.contains("[voice] url")
    ));
    let site = serve(api);
    let w = web(site.port, "/v1/audio/transcriptions", 2);
    assert!(w.voice_on(&all));
    let off = GroupPolicy::from_json(Some(r#"{"voice":false}"#)).unwrap();
    assert!(!w.voice_on(&off));
    let e = w.voice_admit("kids", &off).unwrap_err();
    assert!(
        e.status() == 403 && e.to_string().contains(r#"--web '{"voice":true}'"#),
        "{e}"
    );
    let e = w
        .transcribe("x.png", "image/png", vec![1])
        .await
        .unwrap_err();
    assert_eq!(e.status(), 415, "{e}");
    // Two a minute for this group; another group has its own.
    w.voice_admit("main", &all).unwrap();
    w.voice_admit("main", &all).unwrap();
    let e = w.voice_admit("main", &all).unwrap_err();
    assert!(e.to_string().contains("too many voice notes"), "{e}");
    w.voice_admit("other", &all).unwrap();
    // The host's turns: two held, a third waits and gives up.
    let a = w.voice_slot(Duration::from_millis(10)).await.unwrap();
    let _b = w.voice_slot(Duration::from_millis(10)).await.unwrap();
    assert!(w.voice_slot(Duration::from_millis(50)).await.is_none());
    drop(a);
    assert!(w.voice_slot(Duration::from_millis(50)).await.is_some());
    assert_eq!(site.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}
