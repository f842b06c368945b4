//! The portal as its users meet it: an analyst in real headless Chromium (sign in, triage an
//! incident from the evtx-attack-samples data, hunt with a chart, isolate a device, sign out),
//! and an attacker without a browser (forged forms, scripts smuggled in through event fields).

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use browser::Browser;
use common::{PASSWORD, Server, scratch};

/// The Content-Security-Policy every page must carry.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What the escaping tests smuggle in through event fields and a rule title.
const SCRIPT: &str = "<script>alert(\"rampart-xss\")</script>";
const ESCAPED: &str = "&lt;script&gt;alert(";

// ---------------------------------------------------------------------------------------------
// A portal client without a browser: cookies kept by hand, redirects not followed.

struct Client {
    base: String,
    http: ureq::Agent,
    cookies: BTreeMap<String, String>,
}

struct Reply {
    status: u16,
    location: Option<String>,
    csp: Option<String>,
    content_type: String,
    body: String,
}

impl Client {
    fn new(base: &str) -> Client {
        Client {
            base: base.to_string(),
            http: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .timeout_global(Some(Duration::from_secs(120)))
                .build()
                .new_agent(),
            cookies: BTreeMap::new(),
        }
    }

    fn request(&mut self, method: &str, path: &str, form: Option<&[(String, String)]>) -> Reply {
        let url = format!("{}{path}", self.base);
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let response = match method {
            "GET" => self.http.get(&url).header("Cookie", &cookie).call(),
            _ => {
                let mut body = form_urlencoded::Serializer::new(String::new());
                for (k, v) in form.unwrap_or_default() {
                    body.append_pair(k, v);
                }
                self.http
                    .post(&url)
                    .header("Cookie", &cookie)
                    .content_type("application/x-www-form-urlencoded")
                    .send(body.finish())
            }
        };
        let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        for set in response.headers().get_all("set-cookie") {
            let text = set.to_str().unwrap_or_default();
            let pair = text.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                if value.is_empty() || text.contains("Max-Age=0") {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_string(), value.to_string());
                }
            }
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (location, csp) = (header("location"), header("content-security-policy"));
        let content_type = header("content-type").unwrap_or_default();
        Reply {
            status: response.status().as_u16(),
            location,
            csp,
            content_type,
            body: response
                .body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_string()
                .unwrap_or_default(),
        }
    }

    fn get(&mut self, path: &str) -> Reply {
        self.request("GET", path, None)
    }

    fn post(&mut self, path: &str, form: &[(String, String)]) -> Reply {
        self.request("POST", path, Some(form))
    }

    /// Signs in through the form, as a browser would.
    fn sign_in(&mut self, user: &str, password: &str) {
        let page = self.get("/");
        let form = forms(&page.body)
            .into_iter()
            .find(|f| f.action == "/login")
            .expect("a sign-in form at /");
        let mut fields = without(&form.fields, &["username", "password"]);
        fields.push(("username".into(), user.into()));
        fields.push(("password".into(), password.into()));
        let reply = self.post("/login", &fields);
        assert_eq!(reply.status, 303, "sign-in: {}", reply.body);
        assert!(self.cookies.contains_key("rampart_session"));
    }
}

// ---------------------------------------------------------------------------------------------
// Just enough HTML reading for pages maud writes (double-quoted attributes, escaped text).

#[derive(Debug, Clone)]
struct FormSpec {
    method: String,
    action: String,
    /// Named inputs, textareas and selects with their initial values.
    fields: Vec<(String, String)>,
}

/// `fields` less those named in `names`.
fn without(fields: &[(String, String)], names: &[&str]) -> Vec<(String, String)> {
    fields
        .iter()
        .filter(|(k, _)| !names.contains(&k.as_str()))
        .cloned()
        .collect()
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let end = tag[start..].find('"')? + start;
    Some(unescape(&tag[start..end]))
}

/// The opening tags `<name …>` of `html`, in order, with their offsets.
fn tags<'a>(html: &'a str, name: &str) -> Vec<(usize, &'a str)> {
    let open = format!("<{name}");
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = html[at..].find(&open) {
        let start = at + i;
        let after = html[start + open.len()..].chars().next();
        let end = html[start..]
            .find('>')
            .map_or(html.len(), |e| start + e + 1);
        if matches!(after, Some(' ' | '>' | '/')) {
            out.push((start, &html[start..end]));
        }
        at = end.max(start + 1);
    }
    out
}

fn forms(html: &str) -> Vec<FormSpec> {
    let mut out = Vec::new();
    for (start, tag) in tags(html, "form") {
        let end = html[start..]
            .find("</form>")
            .map_or(html.len(), |e| start + e);
        let inner = &html[start..end];
        let mut fields = Vec::new();
        for (_, input) in tags(inner, "input") {
            let kind = attr(input, "type").unwrap_or_default();
            if matches!(kind.as_str(), "checkbox" | "radio") && !input.contains(" checked") {
                continue;
            }
            if let Some(name) = attr(input, "name") {
                fields.push((name, attr(input, "value").unwrap_or_default()));
            }
        }
        for (offset, textarea) in tags(inner, "textarea") {
            if let Some(name) = attr(textarea, "name") {
                let body_start = offset + textarea.len();
                let body_end = inner[body_start..]
                    .find("</textarea>")
                    .map_or(inner.len(), |e| body_start + e);
                fields.push((name, unescape(&inner[body_start..body_end])));
            }
        }
        for (offset, select) in tags(inner, "select") {
            if let Some(name) = attr(select, "name") {
                let rest = &inner[offset..];
                let options = tags(rest, "option");
                let chosen = options
                    .iter()
                    .find(|(_, o)| o.contains(" selected"))
                    .or(options.first())
                    .and_then(|(_, o)| attr(o, "value"))
                    .unwrap_or_default();
                fields.push((name, chosen));
            }
        }
        out.push(FormSpec {
            method: attr(tag, "method").unwrap_or_else(|| "get".into()),
            action: attr(tag, "action").unwrap_or_default(),
            fields,
        });
    }
    out
}

/// The form controls of a page that a screen reader could not name: no `<label for>` naming
/// their id, no `aria-label`.
fn unlabelled(html: &str) -> Vec<String> {
    let labelled: BTreeSet<String> = tags(html, "label")
        .into_iter()
        .filter_map(|(_, tag)| attr(tag, "for"))
        .collect();
    let mut out = Vec::new();
    for name in ["input", "select", "textarea"] {
        for (_, tag) in tags(html, name) {
            let kind = attr(tag, "type").unwrap_or_default();
            if matches!(kind.as_str(), "hidden" | "submit" | "button" | "reset") {
                continue;
            }
            let named = attr(tag, "aria-label").is_some()
                || attr(tag, "id").is_some_and(|id| labelled.contains(&id));
            if !named {
                out.push(tag.to_string());
            }
        }
    }
    out
}

/// Same-site links of a page (paths), assets left out.
fn links(html: &str) -> Vec<String> {
    tags(html, "a")
        .into_iter()
        .filter_map(|(_, tag)| attr(tag, "href"))
        .filter(|h| h.starts_with('/') && !h.starts_with("//") && !h.starts_with("/static/"))
        .map(|h| h.split('#').next().unwrap_or_default().to_string())
        .collect()
}

/// Every page reachable by links from the sections, at most `limit`, with its reply.
fn crawl(client: &mut Client, limit: usize) -> Vec<(String, Reply)> {
    let start = [
        "/incidents",
        "/alerts",
        "/devices",
        "/hunting",
        "/actions",
        "/indicators",
        "/rules",
        "/settings",
    ];
    let mut queue: VecDeque<String> = start.iter().map(|s| s.to_string()).collect();
    let mut seen: BTreeSet<String> = queue.iter().cloned().collect();
    let mut pages = Vec::new();
    while let Some(path) = queue.pop_front() {
        if pages.len() >= limit {
            break;
        }
        let reply = client.get(&path);
        assert!(
            reply.status < 500,
            "GET {path}: {} {}",
            reply.status,
            reply.body
        );
        if reply.content_type.starts_with("text/html") {
            for link in links(&reply.body) {
                // Signing out is a form; a link there would end the crawl's session.
                if seen.insert(link.clone()) {
                    queue.push_back(link);
                }
            }
        }
        pages.push((path, reply));
    }
    pages
}

// ---------------------------------------------------------------------------------------------
// Data: an alert whose event and rule carry a script.

const PROBE_RULE: &str = r#"title: Portal escaping probe <script>alert("rule")</script>
id: 0d7f3c52-4b0e-4c55-9f0e-7d1b2a9c4e11
status: test
description: Fires on the portal tests' smuggled script.
logsource:
  product: windows
  category: process_creation
detection:
  selection:
    CommandLine|contains: '<script>'
  condition: selection
level: high
tags:
  - attack.execution
  - attack.t1059
"#;

/// Uploads the probe rule and a Sysmon process creation whose fields carry [`SCRIPT`].
fn smuggle_script(server: &Server, token: &str) {
    let url = format!("{}/api/v1/rules", server.url);
    let mut response = server
        .http
        .post(&url)
        .header("Authorization", &format!("Bearer {token}"))
        .content_type("application/yaml")
        .send(PROBE_RULE)
        .expect("rule upload");
    let status = response.status().as_u16();
    assert!(
        status == 200 || status == 201,
        "rule upload: {status} {}",
        response.body_mut().read_to_string().unwrap_or_default()
    );
    let event = json!({"Event": {
        "System": {
            "Provider_attributes": {"Name": "Microsoft-Windows-Sysmon"},
            "EventID": 1, "EventRecordID": 4242,
            "Channel": "Microsoft-Windows-Sysmon/Operational",
            "Computer": "ws-portal.example",
            "TimeCreated_attributes": {"SystemTime": chrono_now()},
        },
        "EventData": {
            "Image": "C:\\Windows\\System32\\cmd.exe",
            "CommandLine": format!("cmd.exe /c echo {SCRIPT}"),
            "ParentImage": "C:\\Windows\\explorer.exe",
            "ParentCommandLine": format!("explorer.exe \"><img src=x onerror=alert(1)>{SCRIPT}"),
            "User": "CORP\\mallory",
            "ProcessId": "4321",
            "ParentProcessId": "1234",
        },
    }});
    let url = format!("{}/api/v1/ingest/events?name=probe", server.url);
    let mut response = server
        .http
        .post(&url)
        .header("Authorization", &format!("Bearer {token}"))
        .content_type("application/x-ndjson")
        .send(format!("{event}\n"))
        .expect("event upload");
    let answer = response.body_mut().read_to_string().unwrap_or_default();
    assert_eq!(response.status().as_u16(), 200, "event upload: {answer}");
    let alerts = server.get("/api/v1/alerts", token);
    assert!(
        alerts["items"].as_array().is_some_and(|a| a
            .iter()
            .any(|x| x["title"].as_str().is_some_and(|t| t.contains("<script>")))),
        "the probe raised no alert: {alerts}"
    );
}

fn chrono_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Days to civil date (Howard Hinnant's algorithm): no date crate in this test's deps.
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// ---------------------------------------------------------------------------------------------
// Tests without a browser.

#[test]
fn signed_out_root_is_the_sign_in_form_and_pages_need_a_session() {
    let dir = scratch("portal-signed-out");
    let server = Server::start(&dir, false, &[]);
    let mut client = Client::new(&server.url);
    let root = client.get("/");
    assert_eq!(root.status, 200);
    assert_eq!(root.csp.as_deref(), Some(CSP));
    assert!(root.content_type.starts_with("text/html"));
    let form = forms(&root.body)
        .into_iter()
        .find(|f| f.action == "/login")
        .expect("the sign-in form");
    assert_eq!(form.method, "post");
    assert!(form.fields.iter().any(|(k, _)| k == "_csrf"));
    assert!(root.body.contains("name=\"password\""));
    // Signed out, a page sends the visitor to sign in and back.
    let page = client.get("/incidents?status=new");
    assert_eq!(page.status, 303);
    assert_eq!(
        page.location.as_deref(),
        Some("/?next=%2Fincidents%3Fstatus%3Dnew")
    );
    // A wrong password keeps the visitor out, with the form again.
    let mut fields = without(&form.fields, &["username", "password"]);
    fields.push(("username".into(), "admin".into()));
    fields.push(("password".into(), "not the password".into()));
    let refused = client.post("/login", &fields);
    assert_eq!(refused.status, 401);
    assert!(refused.body.contains("Wrong user name or password"));
    assert!(!client.cookies.contains_key("rampart_session"));
    // A sign-in without the double-submit token is refused before the password is looked at.
    let forged = Client::new(&server.url).post(
        "/login",
        &[
            ("username".into(), "admin".into()),
            ("password".into(), PASSWORD.into()),
        ],
    );
    assert_eq!(forged.status, 403);
    // The right password opens a session whose cookie scripts cannot read.
    let mut client = Client::new(&server.url);
    let root = client.get("/");
    let mut fields = without(&forms(&root.body)[0].fields, &["username", "password"]);
    fields.push(("username".into(), "admin".into()));
    fields.push(("password".into(), PASSWORD.into()));
    let url = format!("{}/login", server.url);
    let cookie = format!("rampart_login={}", client.cookies["rampart_login"]);
    let mut body = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &fields {
        body.append_pair(k, v);
    }
    let response = client
        .http
        .post(&url)
        .header("Cookie", &cookie)
        .content_type("application/x-www-form-urlencoded")
        .send(body.finish())
        .expect("sign-in");
    let session_cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("rampart_session="))
        .expect("a session cookie")
        .to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(
            session_cookie.contains(flag),
            "{session_cookie} lacks {flag}"
        );
    }
    // Unknown paths are pages too, with the same policy.
    let missing = client.get("/no/such/page");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.csp.as_deref(), Some(CSP));
}

/// Every page reachable from the sections carries the CSP and labels its controls; every form that changes something
/// is refused without its CSRF token or with a wrong one; and a script smuggled in through an
/// event and a rule title is shown as text on every page.
#[test]
fn every_page_has_the_csp_every_change_needs_its_csrf_token_and_scripts_stay_text() {
    let dir = scratch("portal-security");
    let server = Server::start(&dir, false, &[]);
    let token = server.login("admin", PASSWORD);
    smuggle_script(&server, &token);
    let mut client = Client::new(&server.url);
    client.sign_in("admin", PASSWORD);

    let pages = crawl(&mut client, 250);
    let html: Vec<&(String, Reply)> = pages
        .iter()
        .filter(|(_, r)| r.content_type.starts_with("text/html"))
        .collect();
    assert!(
        html.len() >= 12,
        "the crawl found only {} pages",
        html.len()
    );
    for (path, reply) in &html {
        assert_eq!(reply.csp.as_deref(), Some(CSP), "CSP of {path}");
        let unnamed = unlabelled(&reply.body);
        assert!(
            unnamed.is_empty(),
            "{path}: controls without a label: {unnamed:?}"
        );
        assert!(
            !reply.body.contains(SCRIPT) && !reply.body.contains("<img src=x"),
            "{path} shows the smuggled script as markup"
        );
    }
    let shown: Vec<&str> = html
        .iter()
        .filter(|(_, r)| r.body.contains(ESCAPED))
        .map(|(p, _)| p.as_str())
        .collect();
    for must in ["/alerts/", "/incidents/"] {
        assert!(
            shown.iter().any(|p| p.starts_with(must)),
            "no {must}… page shows the script as text; shown on {shown:?}"
        );
    }

    // Hunting shows the event's command line as text too.
    let hunting = client.get("/hunting");
    let mut form = forms(&hunting.body)
        .into_iter()
        .find(|f| f.action == "/hunting")
        .expect("the hunting form");
    form.fields = without(&form.fields, &["query"]);
    form.fields.push((
        "query".into(),
        "DeviceProcessEvents | where ProcessCommandLine has 'echo' | project ProcessCommandLine, InitiatingProcessCommandLine".into(),
    ));
    let results = client.post("/hunting", &form.fields);
    assert_eq!(results.status, 200, "{}", results.body);
    assert!(
        results.body.contains(ESCAPED),
        "hunting results lack the escaped script"
    );
    assert!(!results.body.contains(SCRIPT));

    // Every form that changes something, refused without or with a wrong token.
    let mut actions = BTreeMap::new();
    for (path, reply) in &html {
        for form in forms(&reply.body) {
            if form.method == "post" {
                actions
                    .entry(form.action.clone())
                    .or_insert((path.clone(), form));
            }
        }
    }
    assert!(
        actions.len() >= 10,
        "only {} distinct forms found: {:?}",
        actions.len(),
        actions.keys().collect::<Vec<_>>()
    );
    for (action, (page, form)) in &actions {
        let stripped = without(&form.fields, &["_csrf"]);
        let refused = client.post(action, &stripped);
        assert_eq!(
            refused.status, 403,
            "{action} (form on {page}) without a token"
        );
        let mut wrong = stripped.clone();
        wrong.push(("_csrf".into(), "0".repeat(40)));
        let refused = client.post(action, &wrong);
        assert_eq!(
            refused.status, 403,
            "{action} (form on {page}) with a wrong token"
        );
    }
    // The same session's real token is accepted: the refusals above were the token's doing.
    let (_, theme_form) = actions.get("/theme").expect("the theme form");
    let mut fields = without(&theme_form.fields, &["theme"]);
    fields.push(("theme".into(), "dark".into()));
    let accepted = client.post("/theme", &fields);
    assert_eq!(accepted.status, 303, "{}", accepted.body);
    assert!(
        client
            .get("/incidents")
            .body
            .contains("data-theme=\"dark\"")
    );
}

// ---------------------------------------------------------------------------------------------
// The analyst's walk through, in Chromium.

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("portal-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

fn evtx_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("samples").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(evtx_files(&path));
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("evtx"))
        {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[test]
fn analyst_walks_through_the_portal_in_chromium() {
    let Some(samples) = rampart_testdata::dataset("datasets/evtx-attack-samples") else {
        return;
    };
    let Some(rules) = rampart_testdata::dataset("rules/sigma/rules/windows") else {
        return;
    };
    let browser = match Browser::start() {
        Ok(browser) => browser,
        Err(why) => {
            rampart_testdata::unavailable(&why);
            return;
        }
    };
    let dir = scratch("portal-walk");
    let server = Server::start(
        &dir,
        false,
        &["--rules", rules.to_str().expect("UTF-8 path")],
    );
    let token = server.login("admin", PASSWORD);
    for file in evtx_files(&samples) {
        let (status, answer) = server.upload(&token, &file);
        assert_eq!(status, 200, "{}: {answer}", file.display());
    }
    smuggle_script(&server, &token);
    let shots = screenshots();
    // Each screenshot also checks the page fits 1280 px without scrolling sideways.
    let shot = |name: &str| {
        browser.screenshot(&shots.join(format!("{name}.png")));
        let overflow = browser.execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
        );
        assert!(
            overflow.as_i64().unwrap_or(0) <= 0,
            "{name}: the page scrolls sideways by {overflow} px at 1280 px"
        );
    };

    // Signed out, / is the sign-in form.
    browser.goto(&format!("{}/", server.url));
    let form = browser.find("form[action='/login']");
    let _ = form;
    shot("01-sign-in");
    browser.fill(&browser.find("#username"), "admin");
    browser.fill(&browser.find("#password"), PASSWORD);
    browser.click(&browser.find("form[action='/login'] button[type='submit']"));

    // The incidents queue, then an incident with its attack story.
    browser.find("table#incidents");
    assert!(browser.url().ends_with("/incidents"), "{}", browser.url());
    let incidents = browser.find_all("table#incidents a.incident-link");
    assert!(incidents.len() >= 5, "{} incidents listed", incidents.len());
    shot("02-incidents");
    browser.click(&incidents[0]);
    let story = browser.find("svg#attack-story");
    let nodes = browser.execute(
        "return document.querySelectorAll('svg#attack-story .node, svg#attack-story .node-alert').length",
    );
    assert!(
        nodes.as_u64().unwrap_or(0) >= 2,
        "the graph has {nodes} nodes"
    );
    assert!(browser.attribute(&story, "viewBox").is_some());
    browser.find("table#incident-alerts");
    shot("03-incident");
    browser.execute("document.querySelector('svg#attack-story').scrollIntoView()");
    shot("03b-attack-story");

    // The alert raised by the smuggled script: shown as text, never run.
    browser.goto(&format!("{}/alerts", server.url));
    let probe = browser
        .find_all("table#alerts a.alert-link")
        .into_iter()
        .find(|a| browser.text(a).contains("escaping probe"))
        .expect("the probe's alert is listed");
    browser.click(&probe);
    let event = browser.find("#matching-event");
    assert!(
        browser.text(&event).contains(SCRIPT),
        "the command line is shown as text"
    );
    assert_eq!(browser.alert_text(), None, "a smuggled script ran");
    assert!(
        !browser.find_all("#matching-event .hit").is_empty(),
        "the matched field is highlighted"
    );
    shot("04-alert");
    // The process tree around the alert's process, the process itself marked.
    let focused = browser.find("#alert-process-tree li.focus");
    assert!(
        browser.text(&focused).contains("cmd.exe"),
        "{}",
        browser.text(&focused)
    );
    browser.execute("document.querySelector('#alert-process-tree').scrollIntoView()");
    shot("04b-alert-process-tree");

    // Hunting: rows and a chart.
    browser.goto(&format!("{}/hunting", server.url));
    browser.fill(
        &browser.find("textarea#query"),
        "DeviceProcessEvents\n| summarize Processes = count() by bin(Timestamp, 1d)\n| render timechart",
    );
    browser.click(&browser.find("button#run"));
    browser.find("table#results");
    let rows = browser.find_all("table#results tbody tr");
    assert!(!rows.is_empty(), "the query returned no rows");
    browser.find("svg#chart");
    shot("05-hunting");

    // A mistake is marked where it is.
    browser.fill(
        &browser.find("textarea#query"),
        "DeviceProcessEvents\n| wher x",
    );
    browser.click(&browser.find("button#run"));
    let error = browser.find("#query-error");
    assert!(
        browser.text(&error).contains("line 2"),
        "{}",
        browser.text(&error)
    );
    shot("06-hunting-error");

    // Isolating a device asks first, then the action waits in the action center.
    browser.goto(&format!("{}/devices", server.url));
    let device = browser.find("table#devices a.device-link");
    shot("07-devices");
    browser.click(&device);
    let device_page = browser.url();
    browser.click(&browser.find("form#action-isolate button[type='submit']"));
    let confirm = browser.find("button#confirm");
    shot("08-confirm-isolation");
    browser.click(&confirm);
    browser.find("table#actions");
    assert!(
        !browser
            .find_all("table#actions tr[data-status='pending']")
            .is_empty(),
        "no pending action in the action center"
    );
    shot("09-action-center");

    // The other areas fit the window too.
    for (path, what, name) in [
        (
            format!("{device_page}/timeline"),
            "#timeline",
            "11-device-timeline",
        ),
        (
            format!("{device_page}/tree"),
            "#process-tree",
            "12-device-tree",
        ),
        (format!("{}/rules", server.url), "table#rules", "13-rules"),
        (
            format!("{}/indicators", server.url),
            "table#indicators",
            "14-indicators",
        ),
        (
            format!("{}/settings/users", server.url),
            "table#users",
            "15-users",
        ),
        (
            format!("{}/settings", server.url),
            "form#own-password",
            "16-account",
        ),
    ] {
        browser.goto(&path);
        browser.find(what);
        shot(name);
    }

    // Dark theme, then signing out ends the session.
    browser.goto(&format!("{}/incidents", server.url));
    browser.execute("document.querySelector('#theme').value = 'dark'; document.querySelector('#theme').form.submit();");
    browser.find("html[data-theme='dark'] table#incidents");
    shot("10-incidents-dark");
    browser.click(&browser.find("form[action='/logout'] button"));
    browser.find("form[action='/login']");
    browser.goto(&format!("{}/incidents", server.url));
    browser.find("form[action='/login']");
    eprintln!("portal screenshots: {}", shots.display());
}

/// A fresh server with a read-only user `reader`, signed in to the portal; and the admin's token.
fn with_reader(name: &str) -> (Server, String, Client) {
    let server = Server::start(&scratch(name), false, &[]);
    let admin = server.login("admin", PASSWORD);
    server.post(
        "/api/v1/users",
        &admin,
        json!({"username": "reader", "password": PASSWORD, "role": "readonly"}),
    );
    let mut client = Client::new(&server.url);
    client.sign_in("reader", PASSWORD);
    (server, admin, client)
}

/// On the account tab a user changes their own password: a mistyped repetition or a wrong
/// current password is refused beside the form; a change keeps them signed in with a new session
/// while the old one ends.
#[test]
fn users_change_their_own_password_and_stay_signed_in() {
    let (server, _, mut client) = with_reader("portal-password");
    let old_session = client.cookies["rampart_session"].clone();
    let form = forms(&client.get("/settings").body)
        .into_iter()
        .find(|f| f.action == "/settings/password")
        .expect("a password form on the account tab");
    let fill = |current: &str, new: &str, again: &str| {
        let mut fields = without(&form.fields, &["current_password", "new_password", "again"]);
        fields.extend([
            ("current_password".to_string(), current.to_string()),
            ("new_password".to_string(), new.to_string()),
            ("again".to_string(), again.to_string()),
        ]);
        fields
    };
    let new_password = "correct horse battery staple";
    let reply = client.post(
        "/settings/password",
        &fill(PASSWORD, new_password, "correct horse battery stable"),
    );
    assert_eq!(reply.status, 400);
    assert!(reply.body.contains("differ"), "{}", reply.body);
    let reply = client.post(
        "/settings/password",
        &fill("wrong", new_password, new_password),
    );
    assert_eq!(reply.status, 403);
    assert!(
        reply.body.contains("current password is wrong"),
        "{}",
        reply.body
    );

    let reply = client.post(
        "/settings/password",
        &fill(PASSWORD, new_password, new_password),
    );
    assert_eq!(reply.status, 303, "{}", reply.body);
    let back = reply.location.expect("back to the account tab");
    assert_ne!(client.cookies["rampart_session"], old_session);
    let page = client.get(&back);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Password changed"), "{}", page.body);
    // The session the change was made with has ended; the new password signs in.
    let mut stale = Client::new(&server.url);
    stale
        .cookies
        .insert("rampart_session".to_string(), old_session);
    let reply = stale.get("/settings");
    assert_eq!(reply.status, 303, "the old session still opens pages");
    Client::new(&server.url).sign_in("reader", new_password);
}

/// A read-only user is offered no form that changes shared state, and a change forged with a
/// valid CSRF token is still refused: by the API the portal calls, whose reason is shown.
#[test]
fn read_only_users_are_offered_no_changes_and_cannot_make_one() {
    let (server, admin, mut client) = with_reader("portal-readonly");
    smuggle_script(&server, &admin);
    let pages = crawl(&mut client, 250);
    // What a reader may post: their own session, password, theme, hunting and their own saved
    // queries.
    let own = |action: &str| {
        matches!(
            action,
            "/theme" | "/logout" | "/hunting" | "/settings/password"
        ) || action.starts_with("/hunting/")
    };
    let mut offered = BTreeSet::new();
    for (path, reply) in &pages {
        assert!(reply.status < 500, "{path}: {}", reply.status);
        for form in forms(&reply.body) {
            if form.method == "post" && !own(&form.action) {
                offered.insert(format!("{} (on {path})", form.action));
            }
        }
    }
    assert!(
        offered.is_empty(),
        "a reader is offered changes: {offered:?}"
    );

    // Forged: the admin's triage form, posted by the reader with the reader's own token.
    let alert = server.get("/api/v1/alerts", &admin)["items"][0]["id"]
        .as_str()
        .expect("an alert")
        .to_string();
    let csrf = forms(&client.get("/incidents").body)
        .into_iter()
        .flat_map(|f| f.fields)
        .find(|(k, _)| k == "_csrf")
        .expect("a CSRF token on the reader's pages")
        .1;
    let forged = client.post(
        &format!("/alerts/{alert}"),
        &[
            ("_csrf".into(), csrf),
            ("op".into(), "save".into()),
            ("status".into(), "resolved".into()),
        ],
    );
    // The page comes back with the API's refusal, and nothing changed.
    assert_eq!(forged.status, 303, "{}", forged.body);
    let back = forged.location.expect("back to the alert");
    assert!(back.contains("error="), "{back}");
    let shown = client.get(&back);
    assert!(shown.body.contains("analyst role"), "{}", shown.body);
    let after = server.get(&format!("/api/v1/alerts/{alert}"), &admin);
    assert_eq!(
        after["status"], "new",
        "the reader changed the alert: {after}"
    );
}
