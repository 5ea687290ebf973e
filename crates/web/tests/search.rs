//! `web_search` against fake SearXNG, Brave and Tavily servers on loopback
//! that answer in each API's documented JSON shape: results come back as
//! title, URL and snippet; keys go in each API's header; the count is
//! capped; a group's policy and a missing backend are refused with the fix.

use pinch_web::search::{Backend, Key};
use pinch_web::testing::{header, serve, Answer};
use pinch_web::{FetchError, GroupPolicy, Settings, Web};

fn json(body: &str) -> Answer {
    Some((
        200,
        header("content-type", "application/json"),
        body.as_bytes().to_vec(),
    ))
}

fn api(path: &str, _port: u16) -> Answer {
    if path.starts_with("/searx/search?") {
        return json(
            r#"{"query":"rent law","results":[
            {"title":"Rent law explained","url":"https://law.example/rent","content":"What a landlord may ask.","engine":"x"},
            {"title":"No URL","url":"","content":"dropped"},
            {"title":"Tenants' rights","url":"https://tenants.example/","content":"A guide."}]}"#,
        );
    }
    if path.starts_with("/brave?") {
        return json(
            r#"{"type":"search","web":{"type":"search","results":[
            {"title":"Rent <strong>law</strong>","url":"https://law.example/rent","description":"A <strong>landlord</strong> &amp; a tenant.","age":"1 day"}]}}"#,
        );
    }
    if path == "/tavily" {
        return json(
            r#"{"query":"rent law","results":[{"title":"T","url":"https://t.example/","content":"tavily says","score":0.9}]}"#,
        );
    }
    if path.starts_with("/locked/search?") {
        return Some((403, vec![], b"Forbidden".to_vec()));
    }
    Some((404, vec![], vec![]))
}

fn web(backend: Backend) -> Web {
    Web::new(Settings {
        search: Some(backend),
        search_max: 2,
        ..Settings::default()
    })
    .unwrap()
}

#[tokio::test]
async fn three_backends_answer_in_one_shape() {
    let s = serve(api);
    let base = format!("http://127.0.0.1:{}", s.port);
    let g = GroupPolicy::default();
    let hits = web(Backend::Searxng {
        url: format!("{base}/searx/"),
    })
    .search("main", &g, "rent law", Some(10))
    .await
    .unwrap();
    assert_eq!(
        hits.len(),
        2,
        "capped at search_max, the URL-less one dropped: {hits:?}"
    );
    assert_eq!(hits[0].title, "Rent law explained");
    assert_eq!(hits[0].snippet, "What a landlord may ask.");
    assert_eq!(hits[1].url, "https://tenants.example/");
    let hits = web(Backend::Brave {
        url: format!("{base}/brave"),
        key: Key::new("brave-key-1"),
    })
    .search("main", &g, "rent law", None)
    .await
    .unwrap();
    assert_eq!(hits[0].title, "Rent law");
    assert_eq!(hits[0].snippet, "A landlord & a tenant.");
    let hits = web(Backend::Tavily {
        url: format!("{base}/tavily"),
        key: Key::new("tvly-key-2"),
    })
    .search("main", &g, "rent law", None)
    .await
    .unwrap();
    assert_eq!(hits[0].snippet, "tavily says");
    let heads = s.heads.lock().unwrap().clone();
    assert!(
        heads[0].starts_with("GET /searx/search?q=rent+law&format=json "),
        "{heads:?}"
    );
    assert!(
        heads[1].contains("x-subscription-token: brave-key-1") && heads[1].contains("count=2"),
        "{heads:?}"
    );
    assert!(
        heads[2].starts_with("POST /tavily ")
            && heads[2].contains("authorization: bearer tvly-key-2"),
        "{heads:?}"
    );
}

#[tokio::test]
async fn refusals_name_their_fix() {
    let s = serve(api);
    let g = GroupPolicy::default();
    match Web::new(Settings::default())
        .unwrap()
        .search("main", &g, "x", None)
        .await
    {
        Err(FetchError::Refused(why)) => assert!(why.contains("[web_search]"), "{why}"),
        other => panic!("{other:?}"),
    }
    let w = web(Backend::Searxng {
        url: format!("http://127.0.0.1:{}/locked", s.port),
    });
    match w.search("main", &g, "x", None).await {
        Err(FetchError::Failed(why)) => {
            assert!(why.contains("403") && why.contains("json format"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    let off = GroupPolicy::from_json(Some(r#"{"search":false}"#)).unwrap();
    match w.search("main", &off, "x", None).await {
        Err(FetchError::Refused(why)) => assert!(why.contains("web_search is off"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(!w.search_on(&off) && w.search_on(&g));
}
