//! The adapter against a small daemon on a real socket: what the host sees
//! and when the journal lets go of a message, and a retried row.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use super::*;
use crate::AckOutcome;

const ME: &str = "+15550001111";

/// Answers every call (recording it) and, once subscribed, sends `push`.
async fn daemon(path: std::path::PathBuf, push: Value, calls: Arc<Mutex<Vec<(String, Value)>>>) {
    let l = tokio::net::UnixListener::bind(&path).unwrap();
    loop {
        let (s, _) = l.accept().await.unwrap();
        let (calls, push) = (calls.clone(), push.clone());
        tokio::spawn(async move {
            let (r, mut w) = s.into_split();
            let mut lines = BufReader::new(r).lines();
            let mut ts = 1_700_000_000_000u64;
            while let Ok(Some(l)) = lines.next_line().await {
                let v: Value = serde_json::from_str(&l).unwrap();
                let m = v["method"].as_str().unwrap().to_owned();
                calls.lock().unwrap().push((m.clone(), v["params"].clone()));
                ts += 1;
                let a = json!({"jsonrpc": "2.0", "id": v["id"], "result": if m == "subscribeReceive" { json!(0) } else { json!({"timestamp": ts}) }});
                w.write_all(format!("{a}\n").as_bytes()).await.unwrap();
                if m == "subscribeReceive" {
                    let n = json!({"jsonrpc": "2.0", "method": "receive", "params": {"subscription": 0, "result": {"envelope": push, "account": ME}}});
                    w.write_all(format!("{n}\n").as_bytes()).await.unwrap();
                }
            }
        });
    }
}

#[tokio::test]
async fn a_message_leaves_the_journal_only_once_stored_and_a_sent_row_is_not_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s");
    let calls = Arc::new(Mutex::new(Vec::new()));
    let env = json!({"sourceNumber": "+15550002222", "sourceUuid": "u-1", "timestamp": 7,
        "dataMessage": {"timestamp": 7, "message": "hello"}});
    tokio::spawn(daemon(sock.clone(), env, calls.clone()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let cfg = SignalConfig {
        account: ME.into(),
        endpoint: Endpoint::Unix(sock),
        launch: None,
        attachments_dir: None,
        state_dir: dir.path().join("state"),
        stall: Duration::from_secs(60),
        read_receipts: true,
    };
    let (tx, mut rx) = mpsc::channel(8);
    let ch = SignalChannel::start(cfg.clone(), tx).unwrap();
    let inbox = || {
        std::fs::read_dir(dir.path().join("state/inbox"))
            .unwrap()
            .count()
    };

    // The host fails to store it: it stays journalled, and comes again.
    let Some(ChannelEvent::Message(ev, ack)) = rx.recv().await else {
        panic!()
    };
    assert_eq!(ev.message_id, "u-1:7");
    assert_eq!(inbox(), 1);
    ack.complete(AckOutcome::Failed("disk full".into()));
    let Some(ChannelEvent::Message(again, ack)) = rx.recv().await else {
        panic!()
    };
    assert_eq!(again.message_id, "u-1:7");
    assert_eq!(inbox(), 1, "kept until the host has it");
    ack.complete(AckOutcome::Stored {
        routed: 1,
        note: None,
        handled: false,
    });
    for _ in 0..100 {
        if inbox() == 0
            && calls
                .lock()
                .unwrap()
                .iter()
                .any(|(m, _)| m == "sendReceipt")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(inbox(), 0, "gone once stored");
    let receipt = calls
        .lock()
        .unwrap()
        .iter()
        .find(|(m, _)| m == "sendReceipt")
        .cloned()
        .unwrap();
    assert_eq!(
        receipt.1,
        json!({"account": ME, "recipient": ["u-1"], "targetTimestamp": [7], "type": "read"})
    );

    // A row delivered, then delivered again (the host crashed before its
    // ledger saw the answer): one send, the same message id.
    let to = Address {
        channel_type: CHANNEL_TYPE.into(),
        platform_id: "u-1".into(),
        thread_id: None,
    };
    let msg = Outgoing {
        id: "out-1".into(),
        text: "hi".into(),
        in_reply_to: Some("u-1:7".into()),
        buttons: vec![],
        files: vec![],
    };
    let first = ch.deliver(&to, &msg).await.unwrap();
    ch.close();
    let (tx, _rx) = mpsc::channel(8);
    let ch = SignalChannel::start(cfg, tx).unwrap();
    for _ in 0..100 {
        if ch.rpc().is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = ch.deliver(&to, &msg).await.unwrap();
    assert_eq!(first, second);
    let sends: Vec<Value> = calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, _)| m == "send")
        .map(|(_, p)| p.clone())
        .collect();
    assert_eq!(sends.len(), 1, "{sends:?}");
    assert_eq!(
        sends[0],
        json!({"account": ME, "recipient": ["u-1"], "message": "hi", "quoteAuthor": "u-1", "quoteTimestamp": 7})
    );
    ch.close();
}
