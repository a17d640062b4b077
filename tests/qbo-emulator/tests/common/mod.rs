//! Helpers shared by the HTTP-level tests.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use qbo_emulator::{Config, Server};
use serde_json::Value;

pub const REALM: &str = "9341452000000001";

/// Every entity the emulator serves, by name: written out here, not taken from the emulator, so a
/// test over all of them notices one that goes missing. The first nineteen as they came, then
/// those added for the rest of pg_qbo's catalog.
pub const ALL_ENTITIES: [&str; 28] = [
    "Account",
    "Bill",
    "Class",
    "CreditMemo",
    "Customer",
    "Department",
    "Employee",
    "Estimate",
    "Invoice",
    "Item",
    "JournalEntry",
    "Payment",
    "PaymentMethod",
    "Purchase",
    "SalesReceipt",
    "TaxCode",
    "Term",
    "TimeActivity",
    "Vendor",
    "Attachable",
    "BillPayment",
    "Budget",
    "Deposit",
    "PurchaseOrder",
    "RefundReceipt",
    "TaxRate",
    "Transfer",
    "VendorCredit",
];

/// The name lists among them: `Active`, only active rows unless a query filters on it.
pub const NAME_LISTS: [&str; 12] = [
    "Account",
    "Budget",
    "Class",
    "Customer",
    "Department",
    "Employee",
    "Item",
    "PaymentMethod",
    "TaxCode",
    "TaxRate",
    "Term",
    "Vendor",
];

/// Those that are neither name lists nor transactions (no `Active`, no `TxnDate`).
pub const OTHERS: [&str; 1] = ["Attachable"];

/// Those Change Data Capture does not serve.
pub const NO_CDC: [&str; 3] = ["TaxCode", "TaxRate", "TimeActivity"];

/// `" AND Active IN (true,false)"` for a name list (to see its inactive rows too), else `""`.
pub fn all_active(entity: &str) -> &'static str {
    if NAME_LISTS.contains(&entity) {
        " AND Active IN (true,false)"
    } else {
        ""
    }
}

pub struct Emu {
    pub server: Server,
    pub base: String,
    pub http: reqwest::Client,
}

/// An emulator with these flags. Intuit's 10 requests per second per realm is lifted unless the
/// test gives `--rate-limit-per-second` itself: most tests send their requests back to back at
/// zero latency, and only the throttling tests are about that limit.
pub async fn start(args: &[&str]) -> Emu {
    let mut all = vec!["--listen", "127.0.0.1:0"];
    if !args.contains(&"--rate-limit-per-second") {
        all.extend_from_slice(&["--rate-limit-per-second", "1000000"]);
    }
    all.extend_from_slice(args);
    let cfg = Config::from_args(all).expect("valid flags");
    let server = qbo_emulator::spawn(cfg).await.expect("starts");
    let base = server.url();
    Emu {
        server,
        base,
        http: reqwest::Client::builder().build().unwrap(),
    }
}

impl Emu {
    pub async fn token(&self) -> String {
        let rt = self.control_get("/__emulator/tokens").await["refresh_token"]
            .as_str()
            .unwrap()
            .to_string();
        let r = self
            .http
            .post(format!("{}/oauth2/v1/tokens/bearer", self.base))
            .basic_auth("emu-client-id", Some("emu-client-secret"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        v["access_token"].as_str().unwrap().to_string()
    }

    pub async fn query_raw(&self, token: &str, realm: &str, q: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/v3/company/{realm}/query", self.base))
            .query(&[("query", q), ("minorversion", "75")])
            .bearer_auth(token)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap()
    }

    pub async fn query(&self, token: &str, q: &str) -> Value {
        let r = self.query_raw(token, REALM, q).await;
        assert_eq!(r.status(), 200, "{q}");
        r.json().await.unwrap()
    }

    pub async fn control_get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn control_post(&self, path: &str, body: Value) -> Value {
        self.http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// POSTs to the control API; returns the status with the JSON answer.
    pub async fn control_post_status(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// A CDC call of `REALM`: status and JSON answer.
    pub async fn cdc(&self, token: &str, entities: &str, since: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}/v3/company/{REALM}/cdc", self.base))
            .query(&[
                ("entities", entities),
                ("changedSince", since),
                ("minorversion", "75"),
            ])
            .bearer_auth(token)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// QuickBooks' "now" of the emulator (`GET /__emulator/clock`).
    pub async fn qbo_now(&self) -> chrono::DateTime<chrono::FixedOffset> {
        let c = self.control_get("/__emulator/clock").await;
        chrono::DateTime::parse_from_rfc3339(c["now"].as_str().unwrap()).unwrap()
    }

    pub async fn faults(&self, spec: &str) {
        let v = self
            .control_post("/__emulator/faults", serde_json::json!({ "spec": spec }))
            .await;
        assert_eq!(v["spec"], spec, "{v}");
    }

    pub async fn truth(&self, realm: &str, entity: &str) -> Vec<Value> {
        self.control_get(&format!("/__emulator/truth/{realm}/{entity}"))
            .await
            .as_array()
            .unwrap()
            .clone()
    }
}

/// The shared samples: `$QBO_SAMPLES_DIR`, else `/work/shared/qbo-samples`, else
/// `<repo>/../shared/qbo-samples` (as the core's `qbo::fault::samples_dir`: a clean clone made
/// elsewhere, as CI's, has no `../shared` beside it).
pub fn samples_dir() -> PathBuf {
    if let Ok(d) = std::env::var("QBO_SAMPLES_DIR") {
        return PathBuf::from(d);
    }
    let fixed = PathBuf::from("/work/shared/qbo-samples");
    if fixed.is_dir() {
        return fixed;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/qbo-samples")
}

pub fn sample_text(rel: &str) -> String {
    let p = samples_dir().join(rel);
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    s.trim_start_matches('\u{feff}').to_string()
}

pub fn sample_json(rel: &str) -> Value {
    serde_json::from_str(&sample_text(rel)).unwrap()
}

/// Keys of a JSON object, sorted.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}

/// Recorded response header of a sample interaction.
pub fn sample_header(rel_meta: &str, name: &str) -> String {
    let m = sample_json(rel_meta);
    m["response"]["headers"][name][0]
        .as_str()
        .unwrap()
        .to_string()
}

/// The fields of the records of `entity` in a recorded XML sample (quickbooks-ruby's fixtures):
/// the names of the direct children of every `<entity …>` element, with its `domain` and
/// `sparse` attributes (which JSON carries as fields). Their union over the file.
pub fn xml_record_keys(rel: &str, entity: &str) -> BTreeSet<String> {
    let text = sample_text(rel);
    let open = format!("<{entity}");
    let close = format!("</{entity}>");
    let mut keys = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        if !after.starts_with([' ', '>']) {
            rest = after;
            continue;
        }
        let tag_end = after.find('>').expect("an opening tag's end");
        for attr in ["domain", "sparse"] {
            if after[..tag_end].contains(&format!("{attr}=")) {
                keys.insert(attr.to_string());
            }
        }
        let body_end = after.find(&close).expect("a closing tag");
        let body = &after[tag_end + 1..body_end];
        let mut depth = 0;
        let mut at = 0;
        while let Some(k) = body[at..].find('<') {
            let tag_text = &body[at + k + 1..];
            let end = tag_text.find('>').expect("a tag's end");
            let tag = &tag_text[..end];
            if tag.starts_with('/') {
                depth -= 1;
            } else if !tag.starts_with(['?', '!']) {
                if depth == 0 {
                    let name = tag.split([' ', '/']).next().expect("a name");
                    keys.insert(name.to_string());
                }
                if !tag.ends_with('/') {
                    depth += 1;
                }
            }
            at += k + 1 + end + 1;
        }
        rest = &after[body_end + close.len()..];
    }
    assert!(!keys.is_empty(), "no {entity} in {rel}");
    keys
}
