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

fn speaking(path: &str, _port: u16) -> Answer {
    Some(match path {
        "/v1/audio/speech" => (
            200,
            header("content-type", "audio/ogg"),
            b"OggS\0\x02 then the Opus pages".to_vec(),
        ),
        "/mp3/v1/audio/speech" => (
            200,
            header("content-type", "audio/mpeg"),
            b"ID3\x04".to_vec(),
        ),
        _ => (404, vec![], vec![]),
    })
}

fn speaker(port: u16, path: &str, per_minute: u32) -> Web {
    Web::new(Settings {
        speech: Some(pinch_web::speech::SpeechEndpoint {
            url: format!("http://127.0.0.1:{port}{path}"),
            model: "tts-1".into(),
            voice: "alloy".into(),
            key: Some(Key::new("sk-speech-7")),
            timeout: Duration::from_secs(10),
            per_minute,
        }),
        ..Settings::default()
    })
    .unwrap()
}

#[tokio::test]
async fn speech_is_asked_as_opus_with_the_key_and_bounded() {
    let site = serve(speaking);
    let all = GroupPolicy::default();
    let w = speaker(site.port, "/v1/audio/speech", 2);
    let audio = w.speak("main", &all, "  Hello there.  ").await.unwrap();
    assert!(audio.starts_with(b"OggS"));
    let head = site.heads.lock().unwrap()[0].clone();
    assert!(head.contains("authorization: bearer sk-speech-7"), "{head}");
    let asked: serde_json::Value = serde_json::from_slice(&site.bodies.lock().unwrap()[0]).unwrap();
    assert_eq!(asked["input"], "Hello there.");
    assert_eq!(asked["response_format"], "opus");
    // Refused before the endpoint is asked: nothing to say, too much.
    let e = w.speak("main", &all, " ").await.unwrap_err();
    assert_eq!(e.status(), 400, "{e}");
    let long = "a".repeat(pinch_web::speech::MAX_INPUT + 1);
    let e = w.speak("main", &all, &long).await.unwrap_err();
    assert!(e.to_string().contains("at most 4096"), "{e}");
    // The group's rate (2 a minute; one spent above).
    w.speak("main", &all, "two").await.unwrap();
    let e = w.speak("main", &all, "three").await.unwrap_err();
    assert!(e.to_string().contains("too many voice replies"), "{e}");
    assert_eq!(site.hits.load(std::sync::atomic::Ordering::SeqCst), 2);
    // Off for a group, off without an endpoint, and not OGG: said.
    let off = GroupPolicy::from_json(Some(r#"{"voice":false}"#)).unwrap();
    assert!(!w.speech_on(&off));
    assert_eq!(w.speak("kids", &off, "hi").await.unwrap_err().status(), 403);
    let none = Web::new(Settings::default()).unwrap();
    assert_eq!(
        none.speak("main", &all, "hi").await.unwrap_err().status(),
        503
    );
    let mp3 = speaker(site.port, "/mp3/v1/audio/speech", 2);
    let e = mp3.speak("main", &all, "hi").await.unwrap_err();
    assert!(e.to_string().contains("not OGG audio"), "{e}");
}
