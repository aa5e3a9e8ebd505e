//! The web app in a real browser: moto, `tregov serve` and a certified OpenID Provider
//! (node's `oidc-provider`) on loopback, headless Chromium through WebDriver. People sign in
//! through the provider's own login form; every page is the one a reviewer, researcher or
//! auditor would use. Screenshots of the main pages land in `target/web-screenshots/`.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use fantoccini::Locator;
use serde_json::Value;
use tregov_tests::browser::{screenshot_dir, Browser};
use tregov_tests::moto::Moto;
use tregov_tests::oidc::Provider;
use tregov_tests::served::Served;
use tregov_tests::{free_port, stdout, workspace_root, Tre};

const STORE: &str = "tre-egress-store";
const STAGING: &str = "tre-egress-staging";
const APPROVED: &str = "tre-egress-approved";
const CLIENT: &str = "tregov-web";

/// One browser at a time: Chromium, node, moto and tregov share two cores.
static ONE_BROWSER: Mutex<()> = Mutex::new(());

/// moto, the provider, the store and a running `tregov serve` with the web app.
struct Stack {
    moto: Moto,
    tre: Tre,
    config: PathBuf,
    _provider: Provider,
    served: Served,
}

impl Stack {
    fn start(web_extra: &str) -> Self {
        let moto = Moto::start();
        runtime().block_on(buckets(&moto));
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let provider = Provider::start(CLIENT, &format!("{base}/web/callback"));
        let tre = Tre::new();
        let entities: Value = serde_json::from_str(
            &std::fs::read_to_string(workspace_root().join("policies/tests/tre.entities.json"))
                .expect("entities"),
        )
        .expect("json");
        tre.import_entities(&entities);
        let config = tre.dir.path().join("tregov.toml");
        std::fs::write(
            &config,
            format!(
                r#"max_attempts = 2
[egress]
store_bucket = "{STORE}"
staging_bucket = "{STAGING}"
approved_bucket = "{APPROVED}"
download_limit = 1
notify_topic_arn = "arn:aws:sns:us-east-1:123456789012:tre-egress"
retry_seconds = 1
[api]
listen = "127.0.0.1:{port}"
[auth]
jwks_url = "{jwks}"
issuer = "{issuer}"
audience = "tregov-egress-app"
[web]
client_id = "{CLIENT}"
public_url = "{base}"
{web_extra}
[daemon]
poll_seconds = 1
"#,
                jwks = provider.jwks_url(),
                issuer = provider.issuer,
            ),
        )
        .expect("config");
        let served = Served::start(tre.command(Some(&moto), &config, &["serve"]));
        Self {
            moto,
            tre,
            config,
            _provider: provider,
            served,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.served.base)
    }

    fn put(&self, key: &str, body: &str) {
        runtime().block_on(self.put_now(key, body));
    }

    /// A researcher saving a file to the workspace's egress store.
    async fn put_now(&self, key: &str, body: &str) {
        self.moto.put_object(STORE, key, body).await;
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Versioned egress buckets and the notification topic.
async fn buckets(moto: &Moto) {
    moto.versioned_buckets(&[STORE, STAGING, APPROVED]).await;
    aws_sdk_sns::Client::new(&moto.sdk_config().await)
        .create_topic()
        .name("tre-egress")
        .send()
        .await
        .expect("topic");
}

/// `tregov access who DATASET` on the stack's store: (holder kind, holder, action) per row.
fn access_who(stack: &Stack, dataset: &str) -> Vec<(String, String, String)> {
    let out = stack.tre.run_with(
        Some(&stack.moto),
        &stack.config,
        &["--output", "json", "access", "who", dataset],
    );
    let report: Value = serde_json::from_str(&stdout(&out)).expect("json report");
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let mut rows: Vec<_> = report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                text(&r["holder_kind"]),
                text(&r["holder"]),
                text(&r["action"]),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// Signs `user` in through the provider's login form, starting from `path`, and waits to be
/// back on it.
async fn sign_in(browser: &Browser, stack: &Stack, user: &str, path: &str) {
    browser.goto(&stack.url(path)).await;
    browser.wait_for_text("Sign in with your TRE account").await;
    browser.click("main a.button").await;
    browser.fill("input[name=login]", user).await;
    browser.fill("input[name=password]", "a password").await;
    browser.click("button[type=submit]").await;
    // The callback's page moves on at once (a same-site navigation, so the Strict session
    // cookie goes with it) to where the sign-in started.
    let back = stack.url(path);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !browser.url().await.starts_with(&back) {
        assert!(
            std::time::Instant::now() < deadline,
            "never got back to {back}: {}",
            browser.url().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let header = browser
        .client
        .find(Locator::Css("form.signout"))
        .await
        .expect("signed in")
        .text()
        .await
        .expect("text");
    assert!(header.contains(&format!("Signed in as {user}")), "{header}");
}

async fn sign_out(browser: &Browser) {
    browser.click("form.signout button").await;
    browser.wait_for_text("You are signed out").await;
}

/// The id of the request whose page the browser shows.
async fn request_id(browser: &Browser) -> String {
    let path = browser.path().await;
    path.trim_start_matches("/web/egress/")
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// alice submits both files of her workspace's egress store through the browser.
async fn submit_as_alice(browser: &Browser, stack: &Stack, workspace: &str) -> String {
    sign_in(browser, stack, "alice", "/web/egress/new").await;
    browser
        .goto(&stack.url(&format!("/web/egress/new?workspace={workspace}")))
        .await;
    browser.wait_for_text("Files in the egress store").await;
    browser.fill("#note", "table 2 of the paper").await;
    browser.screenshot("submit").await;
    browser.click("#submit").await;
    browser.wait_for_text("Submitted for review.").await;
    request_id(browser).await
}

/// POSTs a form the way another site's page would, with the victim's cookie; the status line.
async fn post_form(addr: &str, path: &str, session: &str, origin: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\nCookie: tregov-session={session}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("sends");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("reads");
    answer.lines().next().unwrap_or_default().to_string()
}

#[test]
fn an_egress_request_goes_through_both_reviews_and_one_download_in_the_browser() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let stack = Stack::start("");
    stack.put(
        "ws-alice-ec2/results/summary.csv",
        "cohort,n\nall,1204\nrare,\"3, suppressed\"\n",
    );
    stack.put(
        "ws-alice-ec2/results/notes.txt",
        "methods as in the protocol\n",
    );
    runtime().block_on(async {
        let browser = Browser::start().await;
        let id = submit_as_alice(&browser, &stack, "ws-alice-ec2").await;
        sign_out(&browser).await;
        // alice edits the file after submitting: the pinned version is what gets reviewed.
        stack
            .put_now(
                "ws-alice-ec2/results/summary.csv",
                "cohort,n\nall,1204\nrare,3\n",
            )
            .await;

        sign_in(&browser, &stack, "carol", "/web/egress").await;
        let queue = browser.wait_for_text(&id).await;
        assert!(
            queue.contains("IN_REVIEW, step 1 of 2 (InformationGovernance)"),
            "{queue}"
        );
        browser.screenshot("queue").await;
        browser.click(&format!("a[href='/web/egress/{id}']")).await;
        browser.wait_for_text("Pinned version").await;
        browser.screenshot("request").await;
        browser
            .click("a[href*='preview'][href*='summary.csv']")
            .await;
        let preview = browser.wait_for_text("from the staging copy").await;
        assert!(
            preview.contains("3, suppressed"),
            "the CSV preview is the pinned version: {preview}"
        );
        let cells = browser
            .client
            .find_all(Locator::Css("table.preview td"))
            .await
            .expect("cells");
        assert_eq!(cells.len(), 4, "a quoted comma stays inside its cell");
        browser.screenshot("preview").await;

        browser.goto(&stack.url(&format!("/web/egress/{id}"))).await;
        browser.fill("#reason", "aggregate counts only").await;
        browser.click("#approve").await;
        let approved = browser.wait_for_text("Approved.").await;
        assert!(approved.contains("step 2 of 2 (ResearchIT)"), "{approved}");
        // carol tries step 2 as well: one person never approves two steps.
        browser.click("#approve").await;
        let refused = browser.wait_for_text("Refused by policy").await;
        assert!(
            refused.contains("egress-one-person-one-step"),
            "the refusal names the policy: {refused}"
        );
        browser.screenshot("refused").await;
        browser.click("a[href^='/web/why?seq=']").await;
        let why = browser.wait_for_text("egress-one-person-one-step").await;
        assert!(why.contains("Deny"), "{why}");
        sign_out(&browser).await;

        sign_in(&browser, &stack, "dave", &format!("/web/egress/{id}")).await;
        browser.fill("#reason", "no identifiers").await;
        browser.click("#approve").await;
        browser.wait_for_text("Approved.").await;
        browser.wait_for_text("APPROVED").await;
        sign_out(&browser).await;

        sign_in(&browser, &stack, "gina", &format!("/web/egress/{id}")).await;
        browser.click("#download").await;
        browser.wait_for_text("The links work for").await;
        browser.screenshot("download").await;
        let link = browser
            .client
            .find(Locator::Css("ul.downloads a[href*='summary.csv']"))
            .await
            .expect("a download link")
            .attr("href")
            .await
            .expect("href")
            .expect("a URL");
        let body = tregov_api::client::get_text(&link, tregov_api::client::Bounds::API)
            .await
            .expect("the presigned URL serves");
        assert_eq!(
            body, "cohort,n\nall,1204\nrare,\"3, suppressed\"\n",
            "the reviewed version, not the edit"
        );
        // The limit is one download.
        browser.goto(&stack.url(&format!("/web/egress/{id}"))).await;
        browser.click("#download").await;
        let second = browser.wait_for_text("Refused by policy").await;
        assert!(second.contains("egress-download-limit"), "{second}");
    });
}

#[test]
fn a_researcher_submits_from_the_egress_store_and_withdraws_another_request() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let stack = Stack::start("");
    stack.put("ws-alice-ec2/out/table.csv", "a,b\n1,2\n");
    stack.put("ws-emr-alice/out/figure.txt", "figure 1\n");
    runtime().block_on(async {
        let browser = Browser::start().await;
        let kept = submit_as_alice(&browser, &stack, "ws-alice-ec2").await;
        browser.screenshot("submitted").await;
        browser
            .goto(&stack.url("/web/egress/new?workspace=ws-emr-alice"))
            .await;
        browser.wait_for_text("figure.txt").await;
        browser.click("#submit").await;
        browser.wait_for_text("Submitted for review.").await;
        let withdrawn = request_id(&browser).await;
        assert_ne!(kept, withdrawn);
        browser.fill("#withdraw-reason", "wrong figure").await;
        browser.click("#withdraw").await;
        let page = browser.wait_for_text("Withdrawn.").await;
        assert!(page.contains("WITHDRAWN"), "{page}");
        browser.goto(&stack.url("/web/egress?view=mine")).await;
        let mine = browser.wait_for_text(&kept).await;
        assert!(
            mine.contains(&withdrawn) && mine.contains("WITHDRAWN") && mine.contains("IN_REVIEW"),
            "{mine}"
        );
        browser.screenshot("mine").await;
    });
}

#[test]
fn the_access_page_agrees_with_tregov_access_who() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let stack = Stack::start("");
    let mut expected: Vec<String> = access_who(&stack, "gwas-2024")
        .into_iter()
        .map(|(kind, holder, action)| format!("{kind} {holder} {action}"))
        .collect();
    expected.sort();
    assert!(
        !expected.is_empty(),
        "the fixture TRE gives gwas-2024 readers"
    );
    runtime().block_on(async {
        let browser = Browser::start().await;
        sign_in(&browser, &stack, "ivan", "/web/access").await;
        browser.fill("#dataset", "gwas-2024").await;
        browser.click("form.inline button").await;
        browser.wait_for_text("Who can reach gwas-2024").await;
        browser.screenshot("access").await;
        let mut shown = Vec::new();
        for row in browser.client.find_all(Locator::Css("#access tbody tr")).await.expect("rows") {
            let holder = row.find(Locator::Css("td.holder")).await.expect("holder").text().await.expect("text");
            let action = row.find(Locator::Css("td.action")).await.expect("action").text().await.expect("text");
            shown.push(format!("{holder} {action}"));
        }
        shown.sort();
        assert_eq!(shown, expected, "the page and `tregov access who` list the same accesses");

        // The audit pages an auditor uses on the first day.
        browser.goto(&stack.url("/web/log")).await;
        let log = browser.wait_for_text("Intact").await;
        assert!(log.contains("records"), "{log}");
        browser.screenshot("log").await;
        browser.goto(&stack.url("/web/drift")).await;
        browser.wait_for_text("Changes made outside tregov").await;
        browser.screenshot("drift").await;
        browser.goto(&stack.url("/web/why?principal=Tre::User::%22mallory%22&action=Tre::Action::%22read%22&resource=Tre::Dataset::%22gwas-2024%22")).await;
        let why = browser.wait_for_text("Decision:").await;
        assert!(why.contains("Deny"), "an inactive user is denied: {why}");
        browser.screenshot("why").await;
        sign_out(&browser).await;

        // A researcher may not read who can reach the dataset: the refusal says so.
        sign_in(&browser, &stack, "alice", "/web/access").await;
        browser.goto(&stack.url("/web/access?dataset=gwas-2024")).await;
        let refused = browser.wait_for_text("Refused by policy").await;
        assert!(refused.contains("No policy permits it"), "{refused}");
    });
}

#[test]
fn a_reviewer_revokes_an_access_in_a_campaign_and_it_ends() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let stack = Stack::start("");
    let visitor_reads = |stack: &Stack| {
        access_who(stack, "gwas-2024").contains(&("user".into(), "visitor".into(), "read".into()))
    };
    assert!(visitor_reads(&stack));
    runtime().block_on(async {
        let browser = Browser::start().await;
        sign_in(&browser, &stack, "erin", "/web/reviews").await;
        browser.click("details summary").await;
        browser.fill("#scope", "dataset:gwas-2024").await;
        // A date field's typing order is the browser's locale's; its value is ISO.
        browser
            .client
            .execute(
                "document.querySelector('#due').value = '2099-01-31';",
                vec![],
            )
            .await
            .expect("script runs");
        browser.click("#start").await;
        browser
            .wait_for_text("No review campaign asks your roles")
            .await;
        sign_out(&browser).await;

        sign_in(&browser, &stack, "carol", "/web/reviews").await;
        let items = browser.wait_for_text("Campaign dataset:gwas-2024/").await;
        assert!(items.contains("visitor"), "{items}");
        browser.screenshot("reviews").await;
        browser
            .client
            .find(Locator::XPath(
                "//tr[td[1][normalize-space()='visitor']]//button[@value='revoke']",
            ))
            .await
            .expect("visitor's item")
            .click()
            .await
            .expect("clicks");
        browser.wait_for_text("revoke (carol)").await;
    });
    assert!(
        !visitor_reads(&stack),
        "the revoked access is gone from `tregov access who`"
    );
}

#[test]
fn a_form_without_its_csrf_token_is_refused_and_an_expired_session_goes_back_to_sign_in() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let stack = Stack::start("idle_timeout_seconds = 4\nabsolute_timeout_seconds = 60");
    stack.put("ws-alice-ec2/out/table.csv", "a,b\n1,2\n");
    runtime().block_on(async {
        let browser = Browser::start().await;
        sign_in(&browser, &stack, "alice", "/web/egress/new").await;
        browser
            .goto(&stack.url("/web/egress/new?workspace=ws-alice-ec2"))
            .await;
        browser.wait_for_text("table.csv").await;
        browser
            .client
            .execute(
                "document.querySelector('#submit-form input[name=csrf]').remove();",
                vec![],
            )
            .await
            .expect("script runs");
        browser.click("#submit").await;
        let refused = browser.wait_for_text("CSRF").await;
        assert!(refused.contains("Refused"), "{refused}");
        browser.screenshot("csrf-refused").await;
        // The session cookie is out of scripts' and other sites' reach.
        let cookie = browser
            .client
            .get_named_cookie("tregov-session")
            .await
            .expect("a session cookie");
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
        // The right cookie and token, sent by another site, are refused too.
        browser
            .goto(&stack.url("/web/egress/new?workspace=ws-alice-ec2"))
            .await;
        let token = browser
            .client
            .find(Locator::Css("#submit-form input[name=csrf]"))
            .await
            .expect("the form's token")
            .attr("value")
            .await
            .expect("value")
            .expect("a token");
        let body =
            format!("csrf={token}&workspace=ws-alice-ec2&file=ws-alice-ec2%2Fout%2Ftable.csv");
        let from = |origin: &'static str| {
            post_form(
                stack.served.addr(),
                "/web/egress/new",
                cookie.value(),
                origin,
                &body,
            )
        };
        assert!(
            from("http://evil.example")
                .await
                .starts_with("HTTP/1.1 403"),
            "another origin is refused"
        );
        // Nothing was submitted.
        browser.goto(&stack.url("/web/egress?view=mine")).await;
        browser.wait_for_text("Nothing here.").await;

        tokio::time::sleep(Duration::from_secs(5)).await;
        browser.goto(&stack.url("/web/egress")).await;
        browser.wait_for_text("Your session expired").await;
        assert!(
            browser.path().await.starts_with("/web/signin"),
            "{}",
            browser.path().await
        );
        browser.screenshot("expired").await;
    });
    let saved = std::fs::read_dir(screenshot_dir())
        .expect("screenshots")
        .count();
    assert!(saved > 0);
}
