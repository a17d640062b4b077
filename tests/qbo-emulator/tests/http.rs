//! HTTP-level tests of every endpoint, fault, throttle, token rotation and the barrier, asserting
//! bodies and headers against the shapes of the real recordings in `shared/qbo-samples`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn ct(r: &reqwest::Response) -> String {
    r.headers()["content-type"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn token_endpoint_shapes_and_errors() {
    let emu = start(&[]).await;
    let url = format!("{}/oauth2/v1/tokens/bearer", emu.base);
    // HTTP Basic.
    let r = emu
        .http
        .post(&url)
        .basic_auth("emu-client-id", Some("emu-client-secret"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "emu-refresh-token-0"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("intuit_tid"));
    assert_eq!(ct(&r), "application/json;charset=UTF-8");
    let v: Value = r.json().await.unwrap();
    let mut want = keys(&sample_json("oauth-jsclient/authResponse.json")["json"]);
    want.retain(|k| k != "id_token"); // only with the openid scope
    assert_eq!(keys(&v), want);
    assert_eq!(v["token_type"], "bearer");
    assert_eq!(v["expires_in"], 3600);
    assert_eq!(v["refresh_token"], "emu-refresh-token-0");
    // Credentials in the body.
    let r = emu
        .http
        .post(&url)
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "emu-refresh-token-0"),
            ("client_id", "emu-client-id"),
            ("client_secret", "emu-client-secret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Wrong credentials.
    let r = emu
        .http
        .post(&url)
        .basic_auth("emu-client-id", Some("wrong"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "emu-refresh-token-0"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "invalid_client"})
    );
    // Unknown refresh token: 400 invalid_grant, in one of Intuit's shapes.
    let sample = sample_json("oauth-jsclient/errorResponse.json");
    assert_eq!(sample["response"]["status"], 400);
    for bad in ["nope-1", "nope-2", "nope-3", "nope-4"] {
        let r = emu
            .http
            .post(&url)
            .basic_auth("emu-client-id", Some("emu-client-secret"))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", bad)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "invalid_grant");
    }
    let stats = emu.control_get("/__emulator/stats").await;
    assert_eq!(stats["token_refreshes"], 2);
    assert_eq!(stats["invalid_grant"], 4);
    assert_eq!(stats["invalid_client"], 1);
}

#[tokio::test]
async fn token_rotation_always_and_every_n() {
    let emu = start(&["--rotate-refresh", "always", "--access-token-ttl", "1"]).await;
    let url = format!("{}/oauth2/v1/tokens/bearer", emu.base);
    let refresh = |rt: String| {
        let http = emu.http.clone();
        let url = url.clone();
        async move {
            let r = http
                .post(&url)
                .basic_auth("emu-client-id", Some("emu-client-secret"))
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", rt.as_str()),
                ])
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, a) = refresh("emu-refresh-token-0".into()).await;
    assert_eq!(s, 200);
    let rt1 = a["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt1, "emu-refresh-token-0");
    // The superseded token is dead.
    let (s, e) = refresh("emu-refresh-token-0".into()).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(
        emu.control_get("/__emulator/tokens").await["refresh_token"],
        rt1.as_str()
    );
    // Access tokens expire after the TTL (1 s here).
    let at = a["access_token"].as_str().unwrap();
    assert_eq!(
        emu.query_raw(at, REALM, "SELECT count(*) FROM Invoice")
            .await
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = emu
        .query_raw(at, REALM, "SELECT count(*) FROM Invoice")
        .await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("Token expired"));

    let emu = start(&["--rotate-refresh", "every=3"]).await;
    let mut rts = Vec::new();
    for _ in 0..3 {
        let r = emu
            .http
            .post(format!("{}/oauth2/v1/tokens/bearer", emu.base))
            .basic_auth("emu-client-id", Some("emu-client-secret"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "emu-refresh-token-0"),
            ])
            .send()
            .await
            .unwrap();
        rts.push(
            r.json::<Value>().await.unwrap()["refresh_token"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(rts[0], "emu-refresh-token-0");
    assert_eq!(rts[1], "emu-refresh-token-0");
    assert_ne!(rts[2], "emu-refresh-token-0");
}

/// POSTs a refresh with HTTP Basic and returns the raw response.
async fn post_refresh(emu: &Emu, rt: &str) -> reqwest::Response {
    emu.http
        .post(format!("{}/oauth2/v1/tokens/bearer", emu.base))
        .basic_auth("emu-client-id", Some("emu-client-secret"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", rt)])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn token_fault_badexpires_rotates_and_sends_expires_in_as_a_string() {
    // Rotation is forced even with the default `never`: the salvaged token is the only good one.
    let emu = start(&[]).await;
    emu.faults("token:badexpires@nth=1").await;
    let r = post_refresh(&emu, "emu-refresh-token-0").await;
    assert_eq!(r.status(), 200);
    assert_eq!(ct(&r), "application/json;charset=UTF-8");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["expires_in"], "3600");
    assert_eq!(v["token_type"], "bearer");
    assert_eq!(v["x_refresh_token_expires_in"], 8_726_400);
    let rt1 = v["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt1, "emu-refresh-token-0");
    assert_eq!(
        emu.control_get("/__emulator/tokens").await["refresh_token"],
        rt1.as_str()
    );
    // The access token works; the old refresh token is superseded; the new one refreshes.
    let at = v["access_token"].as_str().unwrap();
    assert_eq!(
        emu.query_raw(at, REALM, "SELECT count(*) FROM Term")
            .await
            .status(),
        200
    );
    let r = post_refresh(&emu, "emu-refresh-token-0").await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    let r = post_refresh(&emu, &rt1).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["expires_in"], 3600);
    let stats = emu.control_get("/__emulator/stats").await;
    assert_eq!(stats["faults_injected"]["badexpires"], 1);
    assert_eq!(stats["token_refreshes"], 2);
    // A bad refresh token still gets invalid_grant under the fault.
    emu.faults("token:badexpires").await;
    let r = post_refresh(&emu, "nope").await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn token_fault_expires0_is_a_normal_refresh_with_expires_in_0() {
    let emu = start(&["--rotate-refresh", "always"]).await;
    emu.faults("token:expires0").await;
    let r = post_refresh(&emu, "emu-refresh-token-0").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["expires_in"], 0);
    let rt1 = v["refresh_token"].as_str().unwrap();
    assert_ne!(rt1, "emu-refresh-token-0");
    // The access token lives the configured TTL all the same.
    let at = v["access_token"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        emu.query_raw(at, REALM, "SELECT count(*) FROM Term")
            .await
            .status(),
        200
    );
    assert_eq!(post_refresh(&emu, rt1).await.status(), 200);
}

#[tokio::test]
async fn token_fault_echoauth_echoes_the_credentials_verbatim() {
    let emu = start(&[]).await;
    emu.faults("token:echoauth@nth=1").await;
    let r = post_refresh(&emu, "emu-refresh-token-0").await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "invalid_request");
    let d = v["error_description"].as_str().unwrap();
    // base64("emu-client-id:emu-client-secret"), and the form body as sent.
    assert!(
        d.contains("Authorization: Basic ZW11LWNsaWVudC1pZDplbXUtY2xpZW50LXNlY3JldA=="),
        "{d}"
    );
    assert!(
        d.contains("body: grant_type=refresh_token&refresh_token=emu-refresh-token-0"),
        "{d}"
    );
    // Nothing was refreshed or consumed.
    let stats = emu.control_get("/__emulator/stats").await;
    assert_eq!(stats["token_refreshes"], 0);
    assert_eq!(
        post_refresh(&emu, "emu-refresh-token-0").await.status(),
        200
    );
    let log = emu.control_get("/__emulator/requests?since=0").await;
    let first = &log.as_array().unwrap()[0];
    assert_eq!(
        (first["fault"].as_str(), first["status"].as_u64()),
        (Some("echoauth"), Some(400))
    );
}

#[tokio::test]
async fn token_fault_flood_streams_until_its_cap_or_the_client_leaves() {
    let emu = start(&[]).await;
    // A small cap: the whole body arrives, chunked, starting like a token response.
    emu.faults("token:flood=300000@nth=1").await;
    let r = post_refresh(&emu, "emu-refresh-token-0").await;
    assert_eq!(r.status(), 200);
    assert_eq!(ct(&r), "application/json;charset=UTF-8");
    assert!(r.headers().get("content-length").is_none());
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), 300_000);
    assert!(body.starts_with(b"{\"access_token\":\"xxxx"));
    // The default cap is far larger than any client should read: read 1 MiB and hang up.
    emu.faults("token:flood").await;
    let mut r = post_refresh(&emu, "emu-refresh-token-0").await;
    let mut read = 0;
    while read < 1024 * 1024 {
        read += r.chunk().await.unwrap().expect("still streaming").len();
    }
    drop(r);
    // The emulator is not stuck on the abandoned stream; the refresh token was not consumed.
    emu.faults("").await;
    let started = Instant::now();
    assert_eq!(
        post_refresh(&emu, "emu-refresh-token-0").await.status(),
        200
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let stats = emu.control_get("/__emulator/stats").await;
    assert_eq!(stats["faults_injected"]["flood"], 2);
}

#[tokio::test]
async fn discovery_document() {
    let emu = start(&[]).await;
    let r = emu
        .http
        .get(format!("{}/.well-known/openid-configuration", emu.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("intuit_tid"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        keys(&v),
        keys(&sample_json("QuickBooks-V3-DotNET-SDK/discovery.json"))
    );
    assert_eq!(
        v["token_endpoint"],
        format!("{}/oauth2/v1/tokens/bearer", emu.base)
    );
}

#[tokio::test]
async fn query_401_matches_recording() {
    let emu = start(&[]).await;
    let sample = sample_json("qbo_api/vcr/error/401__0.json");
    let www = sample_header("qbo_api/vcr/error/401__0.meta.json", "Www-Authenticate");
    for token in ["", "garbage"] {
        let r = emu.query_raw(token, REALM, "SELECT * FROM Invoice").await;
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], www.as_str());
        assert!(r.headers().contains_key("intuit_tid"));
        assert_eq!(
            ct(&r),
            sample_header("qbo_api/vcr/error/401__0.meta.json", "Content-Type")
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(keys(&v), keys(&sample));
        assert_eq!(
            keys(&v["fault"]["error"][0]),
            keys(&sample["fault"]["error"][0])
        );
        assert_eq!(v["fault"]["error"][0]["code"], "3200");
        assert_eq!(v["fault"]["type"], "AUTHENTICATION");
        assert!(v["time"].is_i64(), "epoch-ms time");
        assert!(v["time"].as_i64().unwrap() > 1_600_000_000_000);
    }
}

#[tokio::test]
async fn query_page_count_empty_and_errors_match_recordings() {
    let emu = start(&["--records", "Invoice=1500"]).await;
    let tok = emu.token().await;
    // A page.
    let r = emu
        .query_raw(
            &tok,
            REALM,
            "SELECT * FROM Vendor MAXRESULTS 5 STARTPOSITION 6",
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(ct(&r).starts_with("application/json;charset="));
    assert!(r.headers().contains_key("intuit_tid"));
    let v: Value = r.json().await.unwrap();
    let sample = sample_json("qbo_api/vcr/all/vendors_by_5__2.json");
    assert_eq!(keys(&v), keys(&sample));
    assert_eq!(keys(&v["QueryResponse"]), keys(&sample["QueryResponse"]));
    assert_eq!(v["QueryResponse"]["startPosition"], 6);
    assert_eq!(v["QueryResponse"]["maxResults"], 5);
    let time = v["time"].as_str().unwrap();
    assert!(time.ends_with("-07:00") && time.contains('.'), "{time}");
    let vendor = &v["QueryResponse"]["Vendor"][0];
    for k in [
        "Id",
        "SyncToken",
        "MetaData",
        "DisplayName",
        "Active",
        "domain",
        "sparse",
        "Balance",
    ] {
        assert!(vendor.get(k).is_some(), "Vendor lacks {k}");
    }
    // count(*).
    let v = emu.query(&tok, "SELECT COUNT(*) FROM Vendor").await;
    let sample = sample_json("qbo_api/vcr/all/vendors_by_5__0.json");
    assert_eq!(keys(&v["QueryResponse"]), keys(&sample["QueryResponse"]));
    let active = emu
        .truth(REALM, "Vendor")
        .await
        .iter()
        .filter(|r| r["Active"] == true)
        .count();
    assert_eq!(v["QueryResponse"]["totalCount"], active);
    // Empty page: no entity key at all.
    let v = emu
        .query(&tok, "SELECT * FROM Customer WHERE Id IN ('100000')")
        .await;
    let sample = sample_json("qbo_api/vcr/all/alt_select__4.json");
    assert_eq!(keys(&v), keys(&sample));
    assert_eq!(v["QueryResponse"], json!({}));
    // MAXRESULTS silently capped at 1000; maxResults = rows on this page.
    let v = emu
        .query(
            &tok,
            "SELECT * FROM Invoice STARTPOSITION 1 MAXRESULTS 5000",
        )
        .await;
    assert_eq!(
        v["QueryResponse"]["Invoice"].as_array().unwrap().len(),
        1000
    );
    assert_eq!(v["QueryResponse"]["maxResults"], 1000);
    let v = emu
        .query(
            &tok,
            "SELECT * FROM Invoice STARTPOSITION 1001 MAXRESULTS 1000",
        )
        .await;
    assert_eq!(v["QueryResponse"]["maxResults"], 500);
    // Unknown entity: the recorded 4001 body, byte for byte except time.
    let r = emu.query_raw(&tok, REALM, "SELECT * FROM Custmoer").await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        ct(&r),
        sample_header("qbo_api/vcr/error/400__1.meta.json", "Content-Type")
    );
    let mut v: Value = r.json().await.unwrap();
    let mut sample = sample_json("qbo_api/vcr/error/400__1.json");
    v["time"] = Value::Null;
    sample["time"] = Value::Null;
    assert_eq!(v, sample);
    // Bad syntax: 4000 as in ExQuickBooks' recorded query_error.json.
    let r = emu.query_raw(&tok, REALM, "SELECT * FROM null").await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    let sample = sample_json("ExQuickBooks/api/query_error.json");
    assert_eq!(
        keys(&v["Fault"]["Error"][0]),
        keys(&sample["Fault"]["Error"][0])
    );
    assert_eq!(v["Fault"]["Error"][0]["code"], "4000");
    assert_eq!(
        v["Fault"]["Error"][0]["Message"],
        sample["Fault"]["Error"][0]["Message"]
    );
    assert_eq!(v["Fault"]["type"], "ValidationFault");
    // POST form with an application/text body.
    let r = emu
        .http
        .post(format!(
            "{}/v3/company/{REALM}/query?minorversion=75",
            emu.base
        ))
        .bearer_auth(&tok)
        .header("content-type", "application/text")
        .body("SELECT * FROM Item WHERE Active IN (true,false) MAXRESULTS 3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["QueryResponse"]["Item"].as_array().unwrap().len(), 3);
    // Unknown realm.
    let r = emu.query_raw(&tok, "123", "SELECT * FROM Item").await;
    assert_eq!(r.status(), 403);
    // Nonsense minorversion.
    let r = emu
        .http
        .get(format!("{}/v3/company/{REALM}/query", emu.base))
        .query(&[("query", "SELECT * FROM Item"), ("minorversion", "abc")])
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn payloads_have_decimals_unicode_and_company_offset() {
    let emu = start(&["--company-offset", "+05:30"]).await;
    let tok = emu.token().await;
    let r = emu
        .query_raw(&tok, REALM, "SELECT * FROM Invoice MAXRESULTS 1000")
        .await;
    let text = r.text().await.unwrap();
    assert!(text.contains("\"Amount\":12.30"));
    assert!(text.contains("+05:30\""));
    let r = emu
        .query_raw(
            &tok,
            REALM,
            "SELECT * FROM Customer WHERE Active IN (true,false) MAXRESULTS 1000",
        )
        .await;
    let text = r.text().await.unwrap();
    assert!(text.contains("Café Zoë ✓"));
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(v["QueryResponse"]["Customer"][0]["BillAddr"]["City"].is_string());
}

#[tokio::test]
async fn cdc_batch_companyinfo_shapes() {
    let now = chrono::Utc::now();
    let from = (now - chrono::Duration::days(10)).to_rfc3339();
    let to = (now - chrono::Duration::days(1)).to_rfc3339();
    let emu = start(&["--data-from", &from, "--data-to", &to]).await;
    let tok = emu.token().await;
    // CDC.
    let since =
        (now - chrono::Duration::days(5)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let r = emu
        .http
        .get(format!("{}/v3/company/{REALM}/cdc", emu.base))
        .query(&[
            ("entities", "estimate,Customer"),
            ("changedSince", since.as_str()),
            ("minorversion", "75"),
        ])
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let sample = sample_json("qbo_api/vcr/cdc/basic__0.json");
    assert_eq!(keys(&v), keys(&sample));
    let qr = &v["CDCResponse"][0]["QueryResponse"];
    assert_eq!(
        keys(&qr[0]),
        keys(&sample["CDCResponse"][0]["QueryResponse"][0])
    );
    let n = qr[0]["Estimate"].as_array().unwrap().len();
    let since_t = chrono::DateTime::parse_from_rfc3339(&since).unwrap();
    let want = emu
        .truth(REALM, "Estimate")
        .await
        .iter()
        .filter(|r| {
            chrono::DateTime::parse_from_rfc3339(r["LastUpdatedTime"].as_str().unwrap()).unwrap()
                >= since_t
        })
        .count();
    assert_eq!(n, want);
    // A deleted record comes back minimal.
    emu.control_post(
        "/__emulator/mutate",
        json!({"realm": REALM, "entity": "Estimate", "op": "delete", "ids": ["1"]}),
    )
    .await;
    let v: Value = emu
        .http
        .get(format!("{}/v3/company/{REALM}/cdc", emu.base))
        .query(&[("entities", "Estimate"), ("changedSince", since.as_str())])
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = v["CDCResponse"][0]["QueryResponse"][0]["Estimate"]
        .as_array()
        .unwrap();
    let del = list.iter().find(|o| o["Id"] == "1").unwrap();
    assert_eq!(del["status"], "Deleted");
    assert!(del["MetaData"]["LastUpdatedTime"].is_string());
    // More than 30 days back is refused.
    let old = (now - chrono::Duration::days(31)).to_rfc3339();
    let r = emu
        .http
        .get(format!("{}/v3/company/{REALM}/cdc", emu.base))
        .query(&[("entities", "Estimate"), ("changedSince", old.as_str())])
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Batch.
    let body = json!({"BatchItemRequest": [
        {"bId": "bid1", "Query": "select * from SalesReceipt MAXRESULTS 2"},
        {"bId": "bid2", "Query": "select * from Custmoer"},
        {"bId": "bid3", "operation": "create", "Vendor": {"DisplayName": "x"}}
    ]});
    let r = emu
        .http
        .post(format!(
            "{}/v3/company/{REALM}/batch?minorversion=75",
            emu.base
        ))
        .bearer_auth(&tok)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let sample = sample_json("qbo_api/vcr/batch/basic__0.json");
    assert_eq!(keys(&v), keys(&sample));
    let items = v["BatchItemResponse"].as_array().unwrap();
    let s_items = sample["BatchItemResponse"].as_array().unwrap();
    assert_eq!(keys(&items[0]), keys(&s_items[3]));
    assert_eq!(
        keys(&items[0]["QueryResponse"]),
        keys(&s_items[3]["QueryResponse"])
    );
    assert_eq!(items[0]["QueryResponse"]["maxResults"], 2);
    assert_eq!(keys(&items[1]), keys(&s_items[1]));
    assert_eq!(
        keys(&items[1]["Fault"]["Error"][0]),
        keys(&s_items[1]["Fault"]["Error"][0])
    );
    assert_eq!(items[1]["Fault"]["Error"][0]["code"], "4001");
    assert_eq!(items[2]["bId"], "bid3");
    // companyinfo.
    let r = emu
        .http
        .get(format!(
            "{}/v3/company/{REALM}/companyinfo/{REALM}",
            emu.base
        ))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["CompanyInfo"]["CompanyName"].is_string());
    assert!(v["time"].is_string());
    // The probe connectors send.
    let v = emu.query(&tok, "SELECT * FROM CompanyInfo").await;
    assert_eq!(v["QueryResponse"]["CompanyInfo"][0]["Id"], "1");
}

async fn fault_once(emu: &Emu, tok: &str, spec: &str) -> reqwest::Response {
    emu.faults(&format!("{spec}@nth=1")).await;
    // A distinct query per spec, so the consecutive-fault cap of one identical request is not hit.
    emu.query_raw(
        tok,
        REALM,
        &format!("SELECT * FROM Term WHERE Name != '{spec}'"),
    )
    .await
}

#[tokio::test]
async fn every_http_fault_kind() {
    let emu = start(&[]).await;
    let tok = emu.token().await;
    let xml_sample = sample_text("quickbooks-ruby/too_many_requests_error.xml");
    for (spec, status, ctype) in [
        ("429json", 429, "application/json"),
        ("429xml", 429, "application/xml"),
        ("429json-ra", 429, "application/json"),
        ("429xml-ra=3", 429, "application/xml"),
        ("429-radate", 429, "application/json"),
        ("403throttle", 403, "application/xml"),
        ("500json", 500, "application/json"),
        ("500xml", 500, "application/xml"),
        ("500html", 500, "text/html"),
        ("502json", 502, "application/json"),
        ("502xml", 502, "application/xml"),
        ("502html", 502, "text/html"),
        ("503json", 503, "application/json"),
        ("503xml", 503, "application/xml"),
        ("503html", 503, "text/html"),
        ("504json", 504, "application/json"),
        ("504xml", 504, "application/xml"),
        ("504html", 504, "text/html"),
        ("fault200", 200, "application/json;charset=UTF-8"),
    ] {
        let r = fault_once(&emu, &tok, spec).await;
        assert_eq!(r.status(), status, "{spec}");
        assert_eq!(ct(&r), ctype, "{spec}");
        assert!(r.headers().contains_key("intuit_tid"), "{spec}");
        let ra = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        match spec {
            "429json-ra" => assert_eq!(ra.as_deref(), Some("1")),
            "429xml-ra=3" => assert_eq!(ra.as_deref(), Some("3")),
            "429-radate" => assert!(ra.unwrap().ends_with(" GMT")),
            _ => assert!(ra.is_none(), "{spec}"),
        }
        let body = r.text().await.unwrap();
        if spec.starts_with("429xml") {
            // Same elements as the recorded XML throttle.
            for needle in [
                "<IntuitResponse time=",
                "<Fault type=\"SERVICE\">",
                "<Error code=\"3001\">",
                "statusCode=429",
                "<Detail>",
            ] {
                assert!(
                    xml_sample.contains(needle) && body.contains(needle),
                    "{needle}"
                );
            }
        }
        if spec == "403throttle" {
            assert!(body.contains("ThrottleExceeded") && body.contains("statusCode=403"));
        }
        if spec == "429json" {
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["Fault"]["Error"][0]["code"], "3001");
        }
        if spec == "fault200" {
            let v: Value = serde_json::from_str(&body).unwrap();
            assert!(v.get("Fault").is_some());
        }
        if ctype == "text/html" {
            assert!(body.starts_with("<html>"));
        }
        // The next request is clean.
        assert_eq!(
            emu.query_raw(&tok, REALM, "SELECT * FROM Term")
                .await
                .status(),
            200,
            "{spec}"
        );
    }
    let stats = emu.control_get("/__emulator/stats").await;
    assert_eq!(stats["faults_injected"]["503html"], 1);
    assert_eq!(stats["faults_injected"]["429-radate"], 1);
}

#[tokio::test]
async fn connection_level_faults() {
    let emu = start(&[]).await;
    let tok = emu.token().await;
    // reset: no response at all.
    let r = emu
        .http
        .get(format!("{}/v3/company/{REALM}/query", emu.base));
    let _ = r;
    emu.faults("reset@nth=1").await;
    let e = emu
        .http
        .get(format!("{}/v3/company/{REALM}/query", emu.base))
        .query(&[("query", "SELECT * FROM Term")])
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap_err();
    assert!(e.is_request() || e.is_connect(), "{e:?}");
    // truncated: a 200 whose JSON is cut.
    let r = fault_once(&emu, &tok, "truncated").await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&body).is_err());
    assert!(body.starts_with("{\"QueryResponse\""));
    // truncated-conn: full Content-Length announced, connection cut half way.
    let r = fault_once(&emu, &tok, "truncated-conn").await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.is_err());
    // hang=MS: answers, late.
    let t = Instant::now();
    let r = fault_once(&emu, &tok, "hang=300").await;
    assert_eq!(r.status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    // hang: never answers (the client times out).
    emu.faults("hang@nth=1").await;
    let e = emu
        .http
        .get(format!("{}/v3/company/{REALM}/query", emu.base))
        .query(&[("query", "SELECT * FROM Term MAXRESULTS 3")])
        .bearer_auth(&tok)
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .unwrap_err();
    assert!(e.is_timeout());
    // 401: the token is expired from now on.
    let r = fault_once(&emu, &tok, "401").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    assert_eq!(
        emu.query_raw(&tok, REALM, "SELECT * FROM Term")
            .await
            .status(),
        401
    );
    let tok = emu.token().await;
    assert_eq!(
        emu.query_raw(&tok, REALM, "SELECT * FROM Term")
            .await
            .status(),
        200
    );
    // token: prefix targets the token endpoint.
    emu.faults("token:503html@nth=1").await;
    let r = emu
        .http
        .post(format!("{}/oauth2/v1/tokens/bearer", emu.base))
        .basic_auth("emu-client-id", Some("emu-client-secret"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "emu-refresh-token-0"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("intuit_tid"));
    assert_eq!(
        emu.query_raw(&tok, REALM, "SELECT * FROM Term")
            .await
            .status(),
        200
    );
    let log = emu.control_get("/__emulator/requests?since=0").await;
    let faults: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["fault"].as_str())
        .collect();
    for k in [
        "reset",
        "truncated",
        "truncated-conn",
        "hang",
        "401",
        "503html",
    ] {
        assert!(faults.contains(&k), "{k} not logged: {faults:?}");
    }
}

#[tokio::test]
async fn consecutive_fault_cap_and_determinism() {
    let emu = start(&["--max-consecutive-faults", "4"]).await;
    let tok = emu.token().await;
    // Always-on fault: at most 4 in a row for one identical request.
    emu.faults("503json").await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            emu.query_raw(&tok, REALM, "SELECT * FROM Class")
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, vec![503, 503, 503, 503, 200, 503]);
    // Probabilistic faults depend on (seed, query, attempt), not arrival order.
    let run = |order: Vec<usize>| {
        let emu = &emu;
        let tok = tok.clone();
        async move {
            emu.control_post("/__emulator/reset", json!({})).await;
            let tok2 = emu.token().await;
            let _ = tok;
            emu.faults("500json:0.5").await;
            let mut got = vec![0u16; order.len()];
            for i in order {
                let q = format!(
                    "SELECT * FROM Invoice STARTPOSITION {} MAXRESULTS 10",
                    i * 10 + 1
                );
                got[i] = emu.query_raw(&tok2, REALM, &q).await.status().as_u16();
            }
            got
        }
    };
    let a = run((0..20).collect()).await;
    let b = run((0..20).rev().collect()).await;
    assert_eq!(a, b);
    assert!(a.contains(&500) && a.contains(&200), "{a:?}");
}

#[tokio::test]
async fn throttling_rate_and_concurrency() {
    let emu = start(&["--rate-limit", "5"]).await;
    let tok = emu.token().await;
    for _ in 0..5 {
        assert_eq!(
            emu.query_raw(&tok, REALM, "SELECT * FROM Term")
                .await
                .status(),
            200
        );
    }
    let r = emu.query_raw(&tok, REALM, "SELECT * FROM Term").await;
    assert_eq!(r.status(), 429);
    let body = r.text().await.unwrap();
    assert!(body.contains("3001") && body.contains("ThrottleExceeded"));
    // Other realm unaffected.
    assert_eq!(
        emu.query_raw(&tok, "9341452000000002", "SELECT * FROM Term")
            .await
            .status(),
        200
    );
    let stats = emu.control_get("/__emulator/stats").await;
    assert_eq!(stats["throttled_429"], 1);
    assert_eq!(stats["requests"]["query"]["429"], 1);

    let emu = start(&["--max-concurrent", "2", "--latency-ms", "400"]).await;
    let tok = emu.token().await;
    let futs: Vec<_> = (0..3)
        .map(|i| {
            let q = format!("SELECT * FROM Term STARTPOSITION {}", i + 1);
            let emu = &emu;
            let tok = tok.clone();
            async move { emu.query_raw(&tok, REALM, &q).await.status().as_u16() }
        })
        .collect();
    let mut got = futures_join(futs).await;
    got.sort();
    assert_eq!(got, vec![200, 200, 429]);
    let stats = emu.control_get("/__emulator/stats").await;
    assert_eq!(stats["max_concurrent_seen"], 2);
    // Slots are freed once responses are written.
    assert_eq!(
        emu.query_raw(&tok, REALM, "SELECT * FROM Term")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn throttling_per_second() {
    // Intuit's default: 10 requests per second per realm
    let emu = start(&["--rate-limit-per-second", "10"]).await;
    let tok = emu.token().await;
    let since = emu
        .control_get("/__emulator/requests")
        .await
        .as_array()
        .unwrap()
        .last()
        .and_then(|e| e["seq"].as_u64())
        .unwrap_or(0);
    // back to back at zero latency: the first refusal comes once 10 requests are in the last
    // second (how many came before it depends on the machine's speed, not the rule)
    let mut statuses = Vec::new();
    let refused = loop {
        let r = emu.query_raw(&tok, REALM, "SELECT * FROM Term").await;
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            break r;
        }
        assert!(statuses.len() < 1000, "never refused: {statuses:?}");
    };
    let body = refused.text().await.unwrap();
    assert!(
        body.contains("3001") && body.contains("ThrottleExceeded"),
        "{body}"
    );
    assert!(
        statuses.len() > 10,
        "refused before 10 were admitted: {statuses:?}"
    );
    // the log: the 10 admitted just before the refusal arrived within the second before it
    let log: Vec<Value> = emu
        .control_get(&format!("/__emulator/requests?since={since}"))
        .await
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["endpoint"] == "query")
        .cloned()
        .collect();
    assert_eq!(log.len(), statuses.len());
    let last = log.last().unwrap();
    assert_eq!(last["status"], 429);
    assert_eq!(last["fault"], "throttle-per-second");
    let at = |e: &Value| e["at_us"].as_i64().expect("at_us");
    let before = &log[log.len() - 11..log.len() - 1];
    assert!(before.iter().all(|e| e["status"] == 200));
    assert!(at(last) - at(&before[0]) < 1_000_000, "{before:?} {last}");
    // other realms have their own second
    assert_eq!(
        emu.query_raw(&tok, "9341452000000002", "SELECT * FROM Term")
            .await
            .status(),
        200
    );
    let stats = emu.control_get("/__emulator/stats").await;
    assert_eq!(stats["throttled_429"], 1);
    assert_eq!(stats["throttled_per_second"], 1);
    assert_eq!(stats["requests"]["query"]["429"], 1);
}

async fn futures_join<F: std::future::Future<Output = u16>>(futs: Vec<F>) -> Vec<u16> {
    let mut handles = Vec::new();
    for f in futs {
        handles.push(f);
    }
    let mut out = Vec::new();
    // Poll them concurrently.
    let all = async {
        let mut pinned: Vec<_> = handles.into_iter().map(Box::pin).collect();
        let mut done: Vec<Option<u16>> = vec![None; pinned.len()];
        std::future::poll_fn(|cx| {
            for (i, f) in pinned.iter_mut().enumerate() {
                if done[i].is_none() {
                    if let std::task::Poll::Ready(v) = f.as_mut().poll(cx) {
                        done[i] = Some(v);
                    }
                }
            }
            if done.iter().all(Option::is_some) {
                std::task::Poll::Ready(done.iter().map(|d| d.unwrap()).collect::<Vec<_>>())
            } else {
                std::task::Poll::Pending
            }
        })
        .await
    };
    out.extend(all.await);
    out
}

#[tokio::test]
async fn barrier_hold_held_release() {
    let emu = start(&[]).await;
    let tok = emu.token().await;
    emu.control_post(
        "/__emulator/hold",
        json!({"nth": 2, "match": "FROM Invoice"}),
    )
    .await;
    // Unmatched requests don't count.
    assert_eq!(
        emu.query_raw(&tok, REALM, "SELECT * FROM Term")
            .await
            .status(),
        200
    );
    assert_eq!(
        emu.query_raw(&tok, REALM, "SELECT * FROM Invoice MAXRESULTS 1")
            .await
            .status(),
        200
    );
    let base = emu.base.clone();
    let http = emu.http.clone();
    let t2 = tok.clone();
    let held_req = tokio::spawn(async move {
        http.get(format!("{base}/v3/company/{REALM}/query"))
            .query(&[("query", "SELECT * FROM Invoice MAXRESULTS 2")])
            .bearer_auth(t2)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    let h = emu.control_get("/__emulator/held?timeout_ms=5000").await;
    assert_eq!(h["held"], true, "{h}");
    assert_eq!(h["query"], "SELECT * FROM Invoice MAXRESULTS 2");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!held_req.is_finished());
    let r = emu.control_post("/__emulator/release", json!({})).await;
    assert_eq!(r["released"], true);
    assert_eq!(held_req.await.unwrap(), 200);
    // Nothing held now: long-poll times out.
    let h = emu.control_get("/__emulator/held?timeout_ms=100").await;
    assert_eq!(h["held"], false);
    // A held client that gives up: release copes, server goes on.
    emu.control_post("/__emulator/hold", json!({"nth": 1}))
        .await;
    let e = emu
        .http
        .get(format!("{}/v3/company/{REALM}/query", emu.base))
        .query(&[("query", "SELECT * FROM Term")])
        .bearer_auth(&tok)
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .unwrap_err();
    assert!(e.is_timeout());
    let h = emu.control_get("/__emulator/held?timeout_ms=1000").await;
    assert_eq!(h["held"], true);
    emu.control_post("/__emulator/release", json!({})).await;
    assert_eq!(
        emu.query_raw(&tok, REALM, "SELECT * FROM Term")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn mutate_schedule_stats_requests_reset() {
    let emu = start(&[]).await;
    let tok = emu.token().await;
    let before = emu.truth(REALM, "Invoice").await;
    let r = emu
        .control_post(
            "/__emulator/mutate",
            json!({"realm": REALM, "entity": "Invoice", "op": "update", "ids": ["1", "2"]}),
        )
        .await;
    let changed = r["changed"].as_array().unwrap();
    assert_eq!(changed.len(), 2);
    let after = emu.truth(REALM, "Invoice").await;
    assert_eq!(
        keys(&after[0]),
        vec!["Active", "Id", "LastUpdatedTime", "SyncToken", "deleted"]
    );
    let bump = |v: &Value| v["SyncToken"].as_str().unwrap().parse::<u32>().unwrap();
    assert_eq!(bump(&after[0]), bump(&before[0]) + 1);
    assert_ne!(after[0]["LastUpdatedTime"], before[0]["LastUpdatedTime"]);
    assert_eq!(changed[0]["LastUpdatedTime"], after[0]["LastUpdatedTime"]);
    // The query sees the new version.
    let v = emu
        .query(&tok, "SELECT * FROM Invoice WHERE Id = '1'")
        .await;
    assert_eq!(
        v["QueryResponse"]["Invoice"][0]["SyncToken"],
        after[0]["SyncToken"]
    );
    // Delete: gone from queries, flagged in truth.
    emu.control_post(
        "/__emulator/mutate",
        json!({"realm": REALM, "entity": "Invoice", "op": "delete", "ids": ["3"]}),
    )
    .await;
    let v = emu.query(&tok, "SELECT count(*) FROM Invoice").await;
    assert_eq!(v["QueryResponse"]["totalCount"], 599);
    assert_eq!(emu.truth(REALM, "Invoice").await[2]["deleted"], true);
    // Random picks by count.
    let r = emu
        .control_post(
            "/__emulator/mutate",
            json!({"realm": REALM, "entity": "Customer", "op": "update", "count": 3}),
        )
        .await;
    assert_eq!(r["changed"].as_array().unwrap().len(), 3);
    // Schedule.
    let r = emu
        .control_post("/__emulator/mutate", json!({"schedule": {"every_ms": 20, "count": 3, "entity": "Bill", "realm": REALM, "op": "update"}}))
        .await;
    assert_eq!(r["scheduled"], true);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stats = emu.control_get("/__emulator/stats").await;
    assert_eq!(stats["mutations"], 2 + 1 + 3 + 3);
    emu.control_post("/__emulator/mutate", json!({"schedule": null}))
        .await;
    // Stats and request log.
    assert!(stats["requests"]["query"]["200"].as_u64().unwrap() >= 2);
    let log = emu.control_get("/__emulator/requests?since=0").await;
    let q = log
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == "query")
        .unwrap();
    for k in [
        "seq",
        "method",
        "endpoint",
        "realm",
        "query",
        "start_position",
        "max_results",
        "status",
        "fault",
        "attempt",
    ] {
        assert!(q.get(k).is_some(), "log entry lacks {k}");
    }
    assert_eq!(q["query"], "SELECT * FROM Invoice WHERE Id = '1'");
    let last_seq = log.as_array().unwrap().last().unwrap()["seq"]
        .as_u64()
        .unwrap();
    assert!(emu
        .control_get(&format!("/__emulator/requests?since={last_seq}"))
        .await
        .as_array()
        .unwrap()
        .is_empty());
    // Reset restores everything.
    emu.faults("500json").await;
    emu.control_post("/__emulator/reset", json!({})).await;
    assert_eq!(emu.truth(REALM, "Invoice").await, before);
    assert_eq!(emu.control_get("/__emulator/faults").await["spec"], "");
    assert_eq!(emu.control_get("/__emulator/stats").await["mutations"], 0);
    assert!(
        emu.control_get("/__emulator/requests?since=0")
            .await
            .as_array()
            .unwrap()
            .len()
            <= 1
    );
    // Old access tokens are gone after reset.
    assert_eq!(
        emu.query_raw(&tok, REALM, "SELECT * FROM Term")
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn intuit_tid_on_every_response() {
    let emu = start(&[]).await;
    for (m, p) in [
        ("GET", "/nope"),
        ("GET", "/__emulator/stats"),
        ("POST", "/oauth2/v1/tokens/bearer"),
    ] {
        let r = emu
            .http
            .request(m.parse().unwrap(), format!("{}{p}", emu.base))
            .send()
            .await
            .unwrap();
        assert!(r.headers().contains_key("intuit_tid"), "{p}");
    }
}

#[tokio::test]
async fn countlie_makes_one_second_claim_n_records_and_pages_them_with_fresh_ids() {
    let emu = start(&["--records", "Invoice=3000"]).await;
    let tok = emu.token().await;
    // the bulk second: more than a page of records in one second
    let mut by_second: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in emu.truth(REALM, "Invoice").await {
        by_second
            .entry(r["LastUpdatedTime"].as_str().unwrap().to_string())
            .or_default()
            .push(r["Id"].as_str().unwrap().to_string());
    }
    let (t, real_ids) = by_second
        .iter()
        .max_by_key(|(_, ids)| ids.len())
        .map(|(t, ids)| (t.clone(), ids.clone()))
        .unwrap();
    let real = real_ids.len();
    assert!(real > 1000, "{real}");
    let count = |extra: &str| {
        format!("SELECT count(*) FROM Invoice WHERE MetaData.LastUpdatedTime = '{t}'{extra}")
    };
    let page = |start: u64| {
        format!("SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime = '{t}' ORDERBY MetaData.LastUpdatedTime STARTPOSITION {start} MAXRESULTS 1000")
    };
    let total = |v: &Value| v["QueryResponse"]["totalCount"].as_u64().unwrap();
    let ids = |v: &Value| -> Vec<String> {
        v["QueryResponse"]["Invoice"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| r["Id"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(total(&emu.query(&tok, &count("")).await), real as u64);
    assert!(ids(&emu.query(&tok, &page(real as u64 + 1)).await).is_empty());

    emu.faults("countlie=1000000000000").await;
    // the count lies, every time (no consecutive-fault cap on a lie)
    for _ in 0..6 {
        assert_eq!(total(&emu.query(&tok, &count("")).await), 1_000_000_000_000);
    }
    // the page straddling the real records' end: the last real ones, then made-up ones
    let start = real as u64 - 499;
    let v = emu.query(&tok, &page(start)).await;
    let got = ids(&v);
    assert_eq!(got.len(), 1000);
    assert!(got[..500].iter().all(|id| real_ids.contains(id)));
    let first_lie = 900_000_000_000u64 + real as u64 + 1;
    assert_eq!(
        got[500..],
        (first_lie..first_lie + 500)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()[..]
    );
    for r in &v["QueryResponse"]["Invoice"].as_array().unwrap()[500..] {
        assert_eq!(r["MetaData"]["LastUpdatedTime"], t.as_str());
        assert_eq!(r["SyncToken"], "0");
    }
    // deep pages keep bringing Ids never seen
    let mut seen: BTreeSet<String> = got.into_iter().collect();
    for start in [1_000_000u64, 2_000_000, 999_999_999_001] {
        let fresh = ids(&emu.query(&tok, &page(start)).await);
        assert_eq!(fresh.len(), 1000);
        for id in fresh {
            assert!(seen.insert(id.clone()), "{id} seen twice");
        }
    }
    // past the claim, nothing
    assert!(ids(&emu.query(&tok, &page(1_000_000_000_001)).await).is_empty());
    // the Id check counts the made-up Ids it lists as being there
    let listed = format!(
        " AND Id IN ('{}','{first_lie}','{}')",
        real_ids[0],
        900_000_000_000u64 + 1_000_000_000_001
    );
    assert_eq!(total(&emu.query(&tok, &count(&listed)).await), 2);
    // queries not pinned to one second are left alone
    let window = format!(
        "SELECT count(*) FROM Invoice WHERE MetaData.LastUpdatedTime >= '{t}' AND MetaData.LastUpdatedTime <= '{t}'"
    );
    assert_eq!(total(&emu.query(&tok, &window).await), real as u64);
    let stats = emu.control_get("/__emulator/stats").await;
    assert_eq!(stats["faults_injected"]["countlie"], 6 + 1 + 3 + 1);

    // a small lie: five records more than the second holds, the last page short
    emu.faults(&format!("countlie={}", real + 5)).await;
    assert_eq!(total(&emu.query(&tok, &count("")).await), real as u64 + 5);
    assert_eq!(ids(&emu.query(&tok, &page(real as u64 + 1)).await).len(), 5);
}

// --- the emulator side of sync: QuickBooks' clock, CDC, TimeActivity, the mutator -------------

fn rfc(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn instant(v: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("{v}"))).unwrap()
}

/// `|a - b| <= 5 s`: the two were read a moment apart.
fn close<A: chrono::TimeZone, B: chrono::TimeZone>(
    a: &chrono::DateTime<A>,
    b: &chrono::DateTime<B>,
) -> bool {
    (a.timestamp() - b.timestamp()).abs() <= 5
}

/// The items of a CDC answer: (entity key, the objects' Ids); an empty `{}` item is ("", []).
fn cdc_items(v: &Value) -> Vec<(String, Vec<String>)> {
    v["CDCResponse"][0]["QueryResponse"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|item| {
            let obj = item.as_object().unwrap();
            match obj.iter().find(|(_, x)| x.is_array()) {
                Some((k, list)) => (
                    k.clone(),
                    list.as_array()
                        .unwrap()
                        .iter()
                        .map(|o| o["Id"].as_str().unwrap().to_string())
                        .collect(),
                ),
                None => {
                    assert!(obj.is_empty(), "{item}");
                    (String::new(), vec![])
                }
            }
        })
        .collect()
}

/// The objects of entity `e` in a CDC answer, by Id.
fn cdc_objects(v: &Value, e: &str) -> BTreeMap<String, Value> {
    v["CDCResponse"][0]["QueryResponse"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| item[e].as_array())
        .flatten()
        .map(|o| (o["Id"].as_str().unwrap().to_string(), o.clone()))
        .collect()
}

fn strip_time(v: &Value) -> Value {
    let mut v = v.clone();
    v.as_object_mut().unwrap().remove("time");
    v
}

fn assert_validation_fault(v: &Value, code: &str, message: &str, detail: &str) {
    assert_eq!(v["Fault"]["type"], "ValidationFault", "{v}");
    let e = &v["Fault"]["Error"][0];
    assert_eq!(
        (
            e["code"].as_str(),
            e["Message"].as_str(),
            e["Detail"].as_str()
        ),
        (Some(code), Some(message), Some(detail)),
        "{v}"
    );
}

#[tokio::test]
async fn clock_moves_qbos_now_the_cdc_limit_and_mutation_stamps() {
    let emu = start(&[]).await;
    let tok = emu.token().await;
    // by default QuickBooks' clock is the real one, rendered in the company offset
    let c = emu.control_get("/__emulator/clock").await;
    assert_eq!(c["offset_seconds"], 0);
    assert!(c["now"].as_str().unwrap().ends_with("-07:00"), "{c}");
    assert!(close(&instant(&c["now"]), &chrono::Utc::now()));
    // 40 days ahead
    let c = emu
        .control_post("/__emulator/clock", json!({"offset_seconds": 40 * 86_400}))
        .await;
    assert_eq!(c["offset_seconds"], 40 * 86_400);
    let qnow = instant(&c["now"]);
    assert!(close(
        &qnow,
        &(chrono::Utc::now() + chrono::Duration::days(40))
    ));
    assert_eq!(
        emu.control_get("/__emulator/clock").await["offset_seconds"],
        40 * 86_400
    );
    // the `time` of a query answer is QuickBooks' now
    let v = emu.query(&tok, "SELECT count(*) FROM Invoice").await;
    assert!(close(&instant(&v["time"]), &qnow), "{v}");
    // CDC: 31 days before QuickBooks' now is refused, 29 days is answered (although, on this
    // machine's clock, that is 11 days in the future)
    let q = qnow.with_timezone(&chrono::Utc);
    let (s, v) = emu
        .cdc(&tok, "Invoice", &rfc(q - chrono::Duration::days(31)))
        .await;
    assert_eq!(s, 400);
    assert_validation_fault(
        &v,
        "2010",
        "Request has invalid or unsupported property",
        "Property Name:changedSince, changedSince is more than 30 days in the past",
    );
    assert!(close(&instant(&v["time"]), &qnow), "{v}");
    let since29 = rfc(q - chrono::Duration::days(29));
    let (s, v) = emu.cdc(&tok, "Invoice", &since29).await;
    assert_eq!(s, 200, "{v}");
    assert!(close(&instant(&v["time"]), &qnow), "{v}");
    assert_eq!(cdc_items(&v), vec![(String::new(), vec![])]);
    // 29 days back on the real clock is 69 days back for QuickBooks
    let (s, _) = emu
        .cdc(
            &tok,
            "Invoice",
            &rfc(chrono::Utc::now() - chrono::Duration::days(29)),
        )
        .await;
    assert_eq!(s, 400);
    // a mutation is stamped with QuickBooks' now, and CDC sees it
    let r = emu
        .control_post(
            "/__emulator/mutate",
            json!({"entity": "Invoice", "op": "update", "ids": ["1"]}),
        )
        .await;
    let lut = instant(&r["changed"][0]["LastUpdatedTime"]);
    assert!(close(&lut, &qnow), "{r}");
    let (s, v) = emu.cdc(&tok, "Invoice", &since29).await;
    assert_eq!(s, 200);
    assert_eq!(
        cdc_items(&v),
        vec![("Invoice".to_string(), vec!["1".to_string()])]
    );
    // an injected fault's `time` is QuickBooks' now too
    emu.faults("fault200@nth=1").await;
    let v = emu.query(&tok, "SELECT * FROM Term").await;
    assert!(close(&instant(&v["time"]), &qnow), "{v}");
    emu.faults("").await;
    // backwards, bad values, and back to the real clock
    let c = emu
        .control_post("/__emulator/clock", json!({"offset_seconds": -3600}))
        .await;
    assert_eq!(c["offset_seconds"], -3600);
    assert!(close(
        &instant(&c["now"]),
        &(chrono::Utc::now() - chrono::Duration::hours(1))
    ));
    let (s, e) = emu
        .control_post_status("/__emulator/clock", json!({"offset_seconds": "soon"}))
        .await;
    assert_eq!(s, 400);
    assert!(e["error"]
        .as_str()
        .unwrap()
        .starts_with("bad clock: invalid type: string \"soon\", expected i64"));
    let (s, e) = emu
        .control_post_status(
            "/__emulator/clock",
            json!({"offset_seconds": 4_000_000_000i64}),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        e["error"],
        "offset_seconds 4000000000 is out of range: at most 3162240000 either way"
    );
    assert_eq!(
        emu.control_get("/__emulator/clock").await["offset_seconds"],
        -3600
    );
    emu.control_post("/__emulator/clock", json!({"offset_seconds": 0}))
        .await;
    assert!(close(&emu.qbo_now().await, &chrono::Utc::now()));
    // reset puts the clock back as well
    emu.control_post("/__emulator/clock", json!({"offset_seconds": 99}))
        .await;
    emu.control_post("/__emulator/reset", json!({})).await;
    assert_eq!(
        emu.control_get("/__emulator/clock").await["offset_seconds"],
        0
    );
}

#[tokio::test]
async fn cdc_over_1000_objects_answers_a_seeded_random_1000() {
    let now = chrono::Utc::now();
    let (from, to) = (
        rfc(now - chrono::Duration::days(10)),
        rfc(now - chrono::Duration::days(1)),
    );
    let args = [
        "--data-from",
        from.as_str(),
        "--data-to",
        to.as_str(),
        "--records",
        "Invoice=700",
        "--records",
        "Customer=400",
        "--records",
        "Bill=300",
    ];
    let since = rfc(now - chrono::Duration::days(20));
    let ents = "Invoice,Customer,Bill";
    let emu = start(&args).await;
    let tok = emu.token().await;
    let (s, a) = emu.cdc(&tok, ents, &since).await;
    assert_eq!(s, 200);
    let items = cdc_items(&a);
    assert_eq!(
        items.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>(),
        ["Invoice", "Customer", "Bill"]
    );
    assert_eq!(items.iter().map(|(_, ids)| ids.len()).sum::<usize>(), 1000);
    for (e, ids) in &items {
        let truth = emu.truth(REALM, e).await;
        let lut = |id: &str| instant(&truth[id.parse::<usize>().unwrap() - 1]["LastUpdatedTime"]);
        let distinct: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "{e}: duplicates");
        // still oldest change first within an entity
        assert!(ids.windows(2).all(|w| lut(&w[0]) <= lut(&w[1])), "{e}");
        let part = a["CDCResponse"][0]["QueryResponse"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i.get(e.as_str()).is_some())
            .unwrap();
        assert_eq!(part["maxResults"], ids.len());
        assert_eq!(part["startPosition"], 1);
    }
    // not the oldest 1000 (all 700 invoices and 300 customers): a subset of every entity
    assert!(items.iter().all(|(_, ids)| !ids.is_empty()));
    assert!(items[0].1.len() < 700, "{}", items[0].1.len());
    // the same request of another emulator of the same seed: the same answer
    let emu2 = start(&args).await;
    let tok2 = emu2.token().await;
    let (_, b) = emu2.cdc(&tok2, ents, &since).await;
    assert_eq!(strip_time(&a), strip_time(&b));
    // the same request again (its second attempt): another draw of 1000
    let (_, a2) = emu.cdc(&tok, ents, &since).await;
    let a2 = cdc_items(&a2);
    assert_eq!(a2.iter().map(|(_, ids)| ids.len()).sum::<usize>(), 1000);
    assert_ne!(a2, items);
    // another seed: another subset of the same 1500 Ids
    let mut seeded = args.to_vec();
    seeded.extend_from_slice(&["--seed", "7"]);
    let emu3 = start(&seeded).await;
    let tok3 = emu3.token().await;
    let (_, c) = emu3.cdc(&tok3, ents, &since).await;
    let c = cdc_items(&c);
    assert_eq!(c.iter().map(|(_, ids)| ids.len()).sum::<usize>(), 1000);
    let set = |v: &[(String, Vec<String>)]| -> BTreeSet<(String, String)> {
        v.iter()
            .flat_map(|(e, ids)| ids.iter().map(move |i| (e.clone(), i.clone())))
            .collect()
    };
    assert_ne!(set(&c), set(&items));
    // exactly 1000 is not capped: everything, oldest first
    let (_, v) = emu.cdc(&tok, "Invoice,Bill", &since).await;
    let all = cdc_items(&v);
    assert_eq!(
        all.iter().map(|(_, ids)| ids.len()).collect::<Vec<_>>(),
        [700, 300]
    );
}

#[tokio::test]
async fn capped_cdc_answer_keeps_an_entity_with_nothing_chosen_as_an_empty_item() {
    let now = chrono::Utc::now();
    let (from, to) = (
        rfc(now - chrono::Duration::days(10)),
        rfc(now - chrono::Duration::days(1)),
    );
    let emu = start(&[
        "--data-from",
        &from,
        "--data-to",
        &to,
        "--records",
        "Invoice=1500",
        "--records",
        "Customer=0",
    ])
    .await;
    let tok = emu.token().await;
    let r = emu
        .control_post(
            "/__emulator/mutate",
            json!({"entity": "Customer", "op": "create", "count": 1}),
        )
        .await;
    assert_eq!(r["changed"][0]["Id"], "1");
    let since = rfc(now - chrono::Duration::days(20));
    // 1501 changes; each attempt draws its own 1000: the new customer is in some, not in others
    let (mut with, mut without) = (0, 0);
    for _ in 0..30 {
        let (s, v) = emu.cdc(&tok, "Customer,Invoice", &since).await;
        assert_eq!(s, 200);
        let items = cdc_items(&v);
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].0, "Invoice");
        if items[0].0.is_empty() {
            assert_eq!(v["CDCResponse"][0]["QueryResponse"][0], json!({}));
            assert_eq!(items[1].1.len(), 1000);
            without += 1;
        } else {
            assert_eq!(items[0], ("Customer".to_string(), vec!["1".to_string()]));
            assert_eq!(items[1].1.len(), 999);
            with += 1;
        }
    }
    assert!(with > 0 && without > 0, "{with} {without}");
}

#[tokio::test]
async fn cdc_refuses_entities_it_does_not_serve_with_a_clean_400() {
    let emu = start(&[]).await;
    let tok = emu.token().await;
    let since = rfc(chrono::Utc::now() - chrono::Duration::days(1));
    for (ents, bad) in [
        ("TimeActivity", "TimeActivity"),
        ("timeactivity", "timeactivity"),
        ("Invoice,TimeActivity", "TimeActivity"),
        ("TaxCode", "TaxCode"),
        ("JournalCode", "JournalCode"),
        ("TaxAgency", "TaxAgency"),
        ("TaxRate", "TaxRate"),
    ] {
        let (s, v) = emu.cdc(&tok, ents, &since).await;
        assert_eq!(s, 400, "{ents}: {v}");
        assert_validation_fault(
            &v,
            "2010",
            "Request has invalid or unsupported property",
            &format!("Property Name:entities, unsupported entity: {bad}"),
        );
    }
    let stats = emu.control_get("/__emulator/stats").await;
    assert_eq!(stats["requests"]["cdc"], json!({"400": 7}));
}

#[tokio::test]
async fn time_activity_is_queried_like_a_transaction_and_hard_deleted() {
    let emu = start(&[]).await;
    let tok = emu.token().await;
    let total = |v: &Value| v["QueryResponse"]["totalCount"].as_u64().unwrap();
    // no Active rule: every record is served
    assert_eq!(
        total(&emu.query(&tok, "SELECT count(*) FROM TimeActivity").await),
        60
    );
    let v = emu
        .query(
            &tok,
            "SELECT * FROM TimeActivity ORDERBY Id STARTPOSITION 1 MAXRESULTS 1000",
        )
        .await;
    let rows = v["QueryResponse"]["TimeActivity"].as_array().unwrap();
    assert_eq!(rows.len(), 60);
    assert_eq!(v["QueryResponse"]["maxResults"], 60);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["Id"], (i + 1).to_string());
        for k in [
            "TxnDate",
            "NameOf",
            "Hours",
            "Minutes",
            "HourlyRate",
            "Description",
            "BillableStatus",
            "MetaData",
            "SyncToken",
            "domain",
            "sparse",
        ] {
            assert!(r.get(k).is_some(), "{k}: {r}");
        }
        assert!(r.get("EmployeeRef").is_some() != r.get("VendorRef").is_some());
    }
    assert_eq!(
        total(
            &emu.query(
                &tok,
                "SELECT count(*) FROM TimeActivity WHERE TxnDate >= '2000-01-01'"
            )
            .await
        ),
        60
    );
    // Active is a name-list field
    let r = emu
        .query_raw(
            &tok,
            REALM,
            "SELECT * FROM TimeActivity WHERE Active = true",
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["Fault"]["Error"][0]["code"],
        "4001"
    );
    // a hard delete: gone from queries and counts, kept in truth as deleted
    let r = emu
        .control_post(
            "/__emulator/mutate",
            json!({"realm": REALM, "entity": "TimeActivity", "op": "delete", "ids": ["5"]}),
        )
        .await;
    assert_eq!(r["changed"][0]["deleted"], true);
    assert_eq!(
        total(&emu.query(&tok, "SELECT count(*) FROM TimeActivity").await),
        59
    );
    assert_eq!(
        emu.query(&tok, "SELECT * FROM TimeActivity WHERE Id = '5'")
            .await["QueryResponse"],
        json!({})
    );
    let truth = emu.truth(REALM, "TimeActivity").await;
    assert_eq!(truth.len(), 60);
    assert_eq!(truth[4]["deleted"], true);
    // and CDC will not tell of it
    let (s, _) = emu
        .cdc(
            &tok,
            "TimeActivity",
            &rfc(chrono::Utc::now() - chrono::Duration::days(1)),
        )
        .await;
    assert_eq!(s, 400);
    // created ones take the next Id
    let r = emu
        .control_post(
            "/__emulator/mutate",
            json!({"entity": "TimeActivity", "op": "create", "count": 1}),
        )
        .await;
    assert_eq!(r["changed"][0]["Id"], "61");
    assert_eq!(
        total(&emu.query(&tok, "SELECT count(*) FROM TimeActivity").await),
        60
    );
}

#[tokio::test]
async fn create_void_inactivate_delete_show_in_truth_queries_and_cdc() {
    let emu = start(&[]).await;
    let tok = emu.token().await;
    let since = rfc(emu.qbo_now().await.with_timezone(&chrono::Utc) - chrono::Duration::seconds(2));
    let mutate = |v: Value| emu.control_post("/__emulator/mutate", v);
    let q1 = |e: &str, id: &str, extra: &str| format!("SELECT * FROM {e} WHERE Id = '{id}'{extra}");
    // create
    let r = mutate(json!({"realm": REALM, "entity": "Invoice", "op": "create", "count": 2})).await;
    let created = r["changed"].as_array().unwrap().clone();
    assert_eq!(
        created
            .iter()
            .map(|c| c["Id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["601", "602"]
    );
    for c in &created {
        assert_eq!(
            keys(c),
            vec!["Active", "Id", "LastUpdatedTime", "SyncToken", "deleted"]
        );
        assert_eq!(
            (&c["SyncToken"], &c["Active"], &c["deleted"]),
            (&json!("0"), &json!(true), &json!(false))
        );
    }
    let truth = emu.truth(REALM, "Invoice").await;
    assert_eq!(truth.len(), 602);
    assert_eq!(truth[600..].to_vec(), created);
    let v = emu.query(&tok, &q1("Invoice", "602", "")).await;
    let inv = &v["QueryResponse"]["Invoice"][0];
    assert_eq!(inv["SyncToken"], "0");
    assert_eq!(inv["MetaData"]["CreateTime"], created[1]["LastUpdatedTime"]);
    assert_eq!(
        inv["MetaData"]["LastUpdatedTime"],
        created[1]["LastUpdatedTime"]
    );
    // void
    let before =
        emu.query(&tok, &q1("Invoice", "5", "")).await["QueryResponse"]["Invoice"][0].clone();
    let r = mutate(json!({"entity": "Invoice", "op": "void", "ids": ["5"]})).await;
    let voided = &r["changed"][0];
    let sync = |v: &Value| v.as_str().unwrap().parse::<u32>().unwrap();
    assert_eq!(sync(&voided["SyncToken"]), sync(&before["SyncToken"]) + 1);
    assert_eq!(
        (&voided["Active"], &voided["deleted"]),
        (&json!(true), &json!(false))
    );
    let after =
        emu.query(&tok, &q1("Invoice", "5", "")).await["QueryResponse"]["Invoice"][0].clone();
    assert_eq!(after["SyncToken"], voided["SyncToken"]);
    assert_eq!(
        after["MetaData"]["LastUpdatedTime"],
        voided["LastUpdatedTime"]
    );
    assert_eq!(
        after["MetaData"]["CreateTime"],
        before["MetaData"]["CreateTime"]
    );
    assert_eq!(after["PrivateNote"], "Voided");
    assert_eq!(
        (&after["TotalAmt"], &after["Balance"]),
        (&json!(0), &json!(0))
    );
    assert!(after["Line"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["Amount"] == 0));
    assert_eq!(after["DocNumber"], before["DocNumber"]);
    // inactivate an active customer
    let cust = emu
        .truth(REALM, "Customer")
        .await
        .into_iter()
        .find(|c| c["Active"] == true)
        .unwrap();
    let cid = cust["Id"].as_str().unwrap().to_string();
    let r = mutate(json!({"entity": "Customer", "op": "inactivate", "ids": [cid]})).await;
    let inactive = r["changed"][0].clone();
    assert_eq!(inactive["Active"], false);
    assert_eq!(sync(&inactive["SyncToken"]), sync(&cust["SyncToken"]) + 1);
    assert_eq!(
        emu.query(&tok, &q1("Customer", &cid, "")).await["QueryResponse"],
        json!({})
    );
    let c = emu
        .query(&tok, &q1("Customer", &cid, " AND Active IN (true,false)"))
        .await["QueryResponse"]["Customer"][0]
        .clone();
    assert_eq!(
        (&c["Active"], &c["SyncToken"]),
        (&json!(false), &inactive["SyncToken"])
    );
    // hard-delete a transaction
    let r = mutate(json!({"entity": "Invoice", "op": "delete", "ids": ["7"]})).await;
    let deleted = r["changed"][0].clone();
    assert_eq!(deleted["deleted"], true);
    assert_eq!(
        emu.query(&tok, "SELECT count(*) FROM Invoice").await["QueryResponse"]["totalCount"],
        601
    );
    // CDC since just before: exactly these records, each as queries and truth show it
    let (s, v) = emu.cdc(&tok, "Invoice,Customer", &since).await;
    assert_eq!(s, 200);
    let invoices = cdc_objects(&v, "Invoice");
    assert_eq!(
        invoices.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        BTreeSet::from(["5", "601", "602", "7"])
    );
    assert_eq!(invoices["5"], after);
    assert_eq!(invoices["602"], *inv);
    assert_eq!(
        invoices["7"],
        json!({"domain": "QBO", "status": "Deleted", "Id": "7",
               "MetaData": {"LastUpdatedTime": deleted["LastUpdatedTime"]}})
    );
    let customers = cdc_objects(&v, "Customer");
    assert_eq!(customers.len(), 1);
    assert_eq!(customers[&cid], c);
    // the truth rows of what changed
    let truth = emu.truth(REALM, "Invoice").await;
    assert_eq!(truth[4], *voided);
    assert_eq!(truth[6], deleted);
    assert_eq!(
        emu.truth(REALM, "Customer").await[cid.parse::<usize>().unwrap() - 1],
        inactive
    );
    // refusals: a clear 400 naming the entity, nothing changed
    for (body, text) in [
        (
            json!({"entity": "Customer", "op": "void", "ids": ["1"]}),
            "op \"void\" does not apply to Customer: Customer is a name list and QuickBooks voids transactions only (make a Customer inactive with \"inactivate\" or \"delete\")",
        ),
        (
            json!({"entity": "Invoice", "op": "inactivate", "ids": ["1"]}),
            "op \"inactivate\" does not apply to Invoice: Invoice is a transaction and only name lists have Active (use \"void\" or \"delete\")",
        ),
        (
            json!({"entity": "Invoice", "op": "undo", "ids": ["1"]}),
            "unknown op \"undo\": expected one of update, delete, create, void, inactivate, mix",
        ),
    ] {
        let (s, e) = emu.control_post_status("/__emulator/mutate", body).await;
        assert_eq!((s, e), (400, json!({ "error": text })));
    }
    assert_eq!(emu.control_get("/__emulator/stats").await["mutations"], 5);
}

#[tokio::test]
async fn mix_is_repeatable_and_each_change_shows_in_truth_queries_and_cdc() {
    let a = start(&[]).await;
    let b = start(&[]).await;
    let tok = a.token().await;
    let since = rfc(a.qbo_now().await.with_timezone(&chrono::Utc) - chrono::Duration::seconds(2));
    let mix = json!({"realm": REALM, "op": "mix", "count": 120});
    let ra = a.control_post("/__emulator/mutate", mix.clone()).await;
    let rb = b.control_post("/__emulator/mutate", mix).await;
    let strip = |v: &Value| -> Vec<Value> {
        v["changed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let mut c = c.clone();
                c.as_object_mut().unwrap().remove("LastUpdatedTime");
                c
            })
            .collect()
    };
    let changes = strip(&ra);
    assert_eq!(changes.len(), 120);
    assert_eq!(changes, strip(&rb), "same seed, same mix");
    let ops: BTreeSet<&str> = changes.iter().map(|c| c["op"].as_str().unwrap()).collect();
    assert_eq!(
        ops,
        BTreeSet::from(["create", "delete", "inactivate", "update", "void"])
    );
    for c in ra["changed"].as_array().unwrap() {
        assert_eq!(
            keys(c),
            vec![
                "Active",
                "Id",
                "LastUpdatedTime",
                "SyncToken",
                "deleted",
                "entity",
                "op",
                "realm"
            ]
        );
        assert_eq!(c["realm"], REALM);
    }
    // the last change of each record is what truth, queries and CDC show
    let mut last: BTreeMap<(String, String), Value> = BTreeMap::new();
    for c in ra["changed"].as_array().unwrap() {
        last.insert(
            (
                c["entity"].as_str().unwrap().to_string(),
                c["Id"].as_str().unwrap().to_string(),
            ),
            c.clone(),
        );
    }
    let cdc_entities: Vec<&str> = ALL_ENTITIES
        .iter()
        .copied()
        .filter(|e| !NO_CDC.contains(e))
        .collect();
    let (s, v) = a.cdc(&tok, &cdc_entities.join(","), &since).await;
    assert_eq!(s, 200, "{v}");
    for e in ALL_ENTITIES {
        let truth = a.truth(REALM, e).await;
        let mine: BTreeMap<&String, &Value> = last
            .iter()
            .filter(|((ent, _), _)| ent == e)
            .map(|((_, id), c)| (id, c))
            .collect();
        for (id, c) in &mine {
            let t = &truth[id.parse::<usize>().unwrap() - 1];
            for k in ["Id", "SyncToken", "LastUpdatedTime", "Active", "deleted"] {
                assert_eq!(t[k], c[k], "{e} {id} {k}");
            }
            let name_list = NAME_LISTS.contains(&e);
            let active = all_active(e);
            let q = a
                .query(
                    &tok,
                    &format!("SELECT * FROM {e} WHERE Id = '{id}'{active}"),
                )
                .await;
            if c["deleted"] == true {
                assert_eq!(q["QueryResponse"], json!({}), "{e} {id}");
            } else {
                let row = &q["QueryResponse"][e][0];
                assert_eq!(row["SyncToken"], c["SyncToken"], "{e} {id}");
                if c["op"] == "void" {
                    assert_eq!(row["PrivateNote"], "Voided", "{e} {id}");
                    // a Transfer has one Amount and no TotalAmt
                    let total = if e == "Transfer" {
                        "Amount"
                    } else {
                        "TotalAmt"
                    };
                    assert_eq!(row[total], 0, "{e} {id}");
                }
                if name_list {
                    assert_eq!(row["Active"], c["Active"], "{e} {id}");
                }
            }
        }
        if cdc_entities.contains(&e) {
            let got = cdc_objects(&v, e);
            assert_eq!(
                got.keys().collect::<BTreeSet<_>>(),
                mine.keys().copied().collect::<BTreeSet<_>>(),
                "{e}"
            );
            for (id, o) in got {
                let c = mine[&id];
                if c["deleted"] == true {
                    assert_eq!(o["status"], "Deleted");
                    assert_eq!(o["MetaData"]["LastUpdatedTime"], c["LastUpdatedTime"]);
                } else {
                    assert_eq!(o["SyncToken"], c["SyncToken"], "{e} {id}");
                }
            }
        }
    }
    assert_eq!(a.control_get("/__emulator/stats").await["mutations"], 120);
    // restricted to some entities; a bad list is refused
    let r = a
        .control_post(
            "/__emulator/mutate",
            json!({"op": "mix", "count": 20, "entities": ["Invoice", "Vendor"]}),
        )
        .await;
    assert!(r["changed"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["entity"] == "Invoice" || c["entity"] == "Vendor"));
    let (s, e) = a
        .control_post_status(
            "/__emulator/mutate",
            json!({"op": "mix", "count": 1, "entities": ["Nope"]}),
        )
        .await;
    assert_eq!((s, e), (400, json!({"error": "unknown entity \"Nope\""})));
    // another seed, another mix
    let c = start(&["--seed", "7"]).await;
    let rc = c
        .control_post(
            "/__emulator/mutate",
            json!({"realm": REALM, "op": "mix", "count": 120}),
        )
        .await;
    assert_ne!(strip(&rc), changes);
}

/// Polls the stats until `mutations` reaches `n` (the mutator ticks on its own schedule).
async fn wait_mutations(emu: &Emu, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = emu.control_get("/__emulator/stats").await["mutations"]
            .as_u64()
            .unwrap();
        if got >= n {
            assert_eq!(got, n);
            return;
        }
        assert!(Instant::now() < deadline, "{got} of {n} mutations");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn periodic_mutator_runs_every_op() {
    let emu = start(&[]).await;
    let r = emu
        .control_post(
            "/__emulator/mutate",
            json!({"schedule": {"every_ms": 5, "count": 3, "per_tick": 2, "entity": "TimeActivity", "realm": REALM, "op": "create"}}),
        )
        .await;
    assert_eq!(r["scheduled"], true);
    wait_mutations(&emu, 6).await;
    let truth = emu.truth(REALM, "TimeActivity").await;
    assert_eq!(truth.len(), 66);
    assert!(truth[60..].iter().all(|t| t["SyncToken"] == "0"));
    let r = emu
        .control_post(
            "/__emulator/mutate",
            json!({"schedule": {"every_ms": 5, "count": 2, "per_tick": 3, "op": "mix", "entities": ["Invoice", "Customer"]}}),
        )
        .await;
    assert_eq!(r["scheduled"], true);
    wait_mutations(&emu, 12).await;
    let r = emu
        .control_post(
            "/__emulator/mutate",
            json!({"schedule": {"every_ms": 5, "count": 1, "entity": "Invoice", "op": "void"}}),
        )
        .await;
    assert_eq!(r["scheduled"], true);
    wait_mutations(&emu, 13).await;
    // a schedule whose op does not apply is refused at once
    let (s, e) = emu
        .control_post_status(
            "/__emulator/mutate",
            json!({"schedule": {"every_ms": 5, "entity": "Vendor", "op": "void"}}),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        e["error"],
        "op \"void\" does not apply to Vendor: Vendor is a name list and QuickBooks voids transactions only (make a Vendor inactive with \"inactivate\" or \"delete\")"
    );
    emu.control_post("/__emulator/mutate", json!({"schedule": null}))
        .await;
}

#[tokio::test]
async fn barrier_holds_a_cdc_call_matching_its_pattern() {
    let emu = start(&[]).await;
    let tok = emu.token().await;
    let since = rfc(chrono::Utc::now() - chrono::Duration::days(1));
    emu.control_post(
        "/__emulator/hold",
        json!({"nth": 1, "match": "changedSince"}),
    )
    .await;
    // a query does not match the pattern
    assert_eq!(
        emu.query_raw(&tok, REALM, "SELECT * FROM Term")
            .await
            .status(),
        200
    );
    let (base, http, t2, s2) = (
        emu.base.clone(),
        emu.http.clone(),
        tok.clone(),
        since.clone(),
    );
    let held_req = tokio::spawn(async move {
        http.get(format!("{base}/v3/company/{REALM}/cdc"))
            .query(&[("entities", "Invoice"), ("changedSince", s2.as_str())])
            .bearer_auth(t2)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    let h = emu.control_get("/__emulator/held?timeout_ms=5000").await;
    assert_eq!(h["held"], true, "{h}");
    assert_eq!(h["query"], format!("entities=Invoice&changedSince={since}"));
    assert!(!held_req.is_finished());
    assert_eq!(
        emu.control_post("/__emulator/release", json!({})).await["released"],
        true
    );
    assert_eq!(held_req.await.unwrap(), 200);
    // an unpatterned hold counts CDC calls as well as queries
    emu.control_post("/__emulator/hold", json!({"nth": 2}))
        .await;
    let (s, _) = emu.cdc(&tok, "Invoice", &since).await;
    assert_eq!(s, 200);
    let (base, http, t2) = (emu.base.clone(), emu.http.clone(), tok.clone());
    let held_req = tokio::spawn(async move {
        http.get(format!("{base}/v3/company/{REALM}/query"))
            .query(&[("query", "SELECT * FROM Term")])
            .bearer_auth(t2)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    let h = emu.control_get("/__emulator/held?timeout_ms=5000").await;
    assert_eq!(h["query"], "SELECT * FROM Term");
    emu.control_post("/__emulator/release", json!({})).await;
    assert_eq!(held_req.await.unwrap(), 200);
}
