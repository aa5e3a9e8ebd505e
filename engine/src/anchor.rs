//! Signed heads, anchored outside the TRE.
//!
//! The hash chain proves that nothing changed *relative to `HEAD`*; whoever can write the data
//! directory can rewrite the records and `HEAD` together. So the head is signed (an ed25519
//! key from a file, or a KMS key the data directory's writers cannot use to sign) and the
//! signed head is written, every so many records or seconds, where the TRE's people cannot
//! change it: an S3 bucket, under Object Lock where the bucket has it. Checking the local log
//! against every anchor then catches a rewritten chain (a record no longer hashes to what was
//! signed), a rolled-back log (it ends before a signed head) and a forged anchor (its signature
//! does not verify). Records after the last anchor are only as safe as the chain: that window
//! is what `anchor_records` and `anchor_seconds` bound.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::collect::BoxFuture;
use crate::error::{EngineError, Result};
use crate::log::{now_rfc3339, DecisionLog, Head};

/// What the signature covers; the version names this layout so it can change.
const MESSAGE_VERSION: &str = "tregov-log-head/v1";

/// A head as signed and anchored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignedHead {
    pub seq: u64,
    pub hash: String,
    /// When it was signed (RFC 3339).
    pub time: String,
    /// Which key signed it: `ed25519:<fingerprint>` or the KMS key id.
    pub key_id: String,
    pub algorithm: String,
    /// Base64 of the signature over [`SignedHead::message`].
    pub signature: String,
}

impl SignedHead {
    /// The bytes that are signed: every field but the signature, one per line.
    pub fn message(seq: u64, hash: &str, time: &str, key_id: &str, algorithm: &str) -> Vec<u8> {
        format!("{MESSAGE_VERSION}\n{seq}\n{hash}\n{time}\n{key_id}\n{algorithm}\n").into_bytes()
    }

    fn signed_message(&self) -> Vec<u8> {
        Self::message(
            self.seq,
            &self.hash,
            &self.time,
            &self.key_id,
            &self.algorithm,
        )
    }

    /// The anchor's object name under `prefix`: ordered by sequence, and never the name of an
    /// earlier anchor (an anchor is never overwritten).
    pub fn object_key(&self, prefix: &str) -> String {
        let stamp: String = self.time.chars().filter(char::is_ascii_digit).collect();
        format!("{prefix}{:020}-{stamp}.json", self.seq)
    }
}

/// Signs heads and checks signatures: a key file, or a KMS key.
pub trait HeadSigner: Send + Sync {
    fn key_id(&self) -> &str;
    fn algorithm(&self) -> &str;
    /// Whether this signer can sign (a public key alone can only verify).
    fn can_sign(&self) -> bool;
    fn sign<'a>(&'a self, message: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>>>;
    fn verify<'a>(&'a self, message: &'a [u8], signature: &'a [u8]) -> BoxFuture<'a, Result<bool>>;
}

/// Where anchors are kept: an S3 bucket in production.
pub trait AnchorStore: Send + Sync {
    fn put<'a>(&'a self, head: &'a SignedHead) -> BoxFuture<'a, Result<()>>;
    /// Every anchor, in object-name order; one that does not parse is returned as its name and
    /// the problem, to be reported rather than skipped.
    fn list(&self) -> BoxFuture<'_, Result<Vec<Listed>>>;
}

pub type Listed = std::result::Result<SignedHead, (String, String)>;

/// Signs the log's current head; `None` for an empty log.
pub async fn sign_head(log: &DecisionLog, signer: &dyn HeadSigner) -> Result<Option<SignedHead>> {
    let Some(Head { seq, hash }) = log.head()? else {
        return Ok(None);
    };
    let time = now_rfc3339();
    let (key_id, algorithm) = (signer.key_id().to_string(), signer.algorithm().to_string());
    let message = SignedHead::message(seq, &hash, &time, &key_id, &algorithm);
    let signature = signer.sign(&message).await?;
    Ok(Some(SignedHead {
        seq,
        hash,
        time,
        key_id,
        algorithm,
        signature: base64::engine::general_purpose::STANDARD.encode(signature),
    }))
}

/// Anchors the head when enough records or time have passed since the last anchor.
pub struct Anchorer<'a> {
    log: &'a DecisionLog,
    signer: &'a dyn HeadSigner,
    store: &'a dyn AnchorStore,
    every_records: u64,
    every: Duration,
    /// Whether the store has been read for its newest anchor.
    started: bool,
    /// The last anchor written (or found in the store at start), and when.
    last: Option<(u64, Instant)>,
}

impl<'a> Anchorer<'a> {
    pub fn new(
        log: &'a DecisionLog,
        signer: &'a dyn HeadSigner,
        store: &'a dyn AnchorStore,
        every_records: u64,
        every: Duration,
    ) -> Self {
        Self {
            log,
            signer,
            store,
            every_records: every_records.max(1),
            every,
            started: false,
            last: None,
        }
    }

    /// Whether the head at `seq` is due: `every_records` new records, or any new record once
    /// `every` has passed since the last anchor.
    pub fn due(&self, seq: u64, now: Instant) -> bool {
        match self.last {
            None => seq > 0,
            Some((anchored, at)) => {
                seq > anchored
                    && (seq - anchored >= self.every_records
                        || now.duration_since(at) >= self.every)
            }
        }
    }

    /// One look: reads the store's last anchor the first time, then anchors if due. Returns
    /// the anchor written, if any.
    pub async fn tick(&mut self) -> Result<Option<SignedHead>> {
        if !self.started {
            let newest = self
                .store
                .list()
                .await?
                .into_iter()
                .filter_map(|l| l.ok())
                .map(|h| h.seq)
                .max();
            self.last = newest.map(|seq| (seq, Instant::now()));
            self.started = true;
        }
        let Some(head) = self.log.head()? else {
            return Ok(None);
        };
        if !self.due(head.seq, Instant::now()) {
            return Ok(None);
        }
        let Some(signed) = sign_head(self.log, self.signer).await? else {
            return Ok(None);
        };
        self.store.put(&signed).await?;
        tracing::info!(seq = signed.seq, key_id = %signed.key_id, "anchored the log head");
        self.last = Some((signed.seq, Instant::now()));
        Ok(Some(signed))
    }
}

/// The local log checked against every anchor.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnchorReport {
    pub ok: bool,
    pub anchors: usize,
    /// The newest anchor that checked out: everything up to it is as it was signed.
    pub newest_good: Option<u64>,
    pub problems: Vec<AnchorProblem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AnchorProblem {
    /// The anchor's object name, or its sequence when it parsed.
    pub anchor: String,
    pub problem: String,
}

/// Checks every anchor's signature with `verifier`, and the local log against every signed
/// head: each anchored record must be there and hash to what was signed.
pub async fn check_anchors(
    log: &DecisionLog,
    verifier: &dyn HeadSigner,
    store: &dyn AnchorStore,
) -> Result<AnchorReport> {
    let listed = store.list().await?;
    let mut problems = Vec::new();
    let mut signed = Vec::new();
    for entry in listed {
        match entry {
            Ok(head) => signed.push(head),
            Err((key, problem)) => problems.push(AnchorProblem {
                anchor: key,
                problem: format!("not a signed head: {problem}"),
            }),
        }
    }
    let anchors = signed.len() + problems.len();
    let mut genuine = Vec::new();
    for head in signed {
        match verify_signature(&head, verifier).await? {
            None => genuine.push(head),
            Some(problem) => problems.push(AnchorProblem {
                anchor: format!("seq {}", head.seq),
                problem,
            }),
        }
    }
    let seqs: BTreeSet<u64> = genuine.iter().map(|h| h.seq).collect();
    let hashes = log.hashes_of(&seqs)?;
    let local_end = log.head()?.map_or(0, |h| h.seq);
    let mut newest_good = None;
    for head in &genuine {
        let problem = match hashes.get(&head.seq) {
            None => Some(format!(
                "signed at {} for record {}, but the local log has no record {} (it ends at {local_end}): the log was rolled back or cut",
                head.time, head.seq, head.seq
            )),
            Some(actual) if *actual != head.hash => Some(format!(
                "record {} hashes to {actual} but {} was signed at {}: the chain was rewritten",
                head.seq, head.hash, head.time
            )),
            Some(_) => None,
        };
        match problem {
            Some(problem) => problems.push(AnchorProblem {
                anchor: format!("seq {}", head.seq),
                problem,
            }),
            None => newest_good = newest_good.max(Some(head.seq)),
        }
    }
    Ok(AnchorReport {
        ok: problems.is_empty(),
        anchors,
        newest_good,
        problems,
    })
}

/// `None` when the head was signed by `verifier`'s key; otherwise why not.
async fn verify_signature(head: &SignedHead, verifier: &dyn HeadSigner) -> Result<Option<String>> {
    if head.key_id != verifier.key_id() || head.algorithm != verifier.algorithm() {
        return Ok(Some(format!(
            "signed by `{}` ({}), not the configured key `{}` ({}): a forged or foreign head",
            head.key_id,
            head.algorithm,
            verifier.key_id(),
            verifier.algorithm()
        )));
    }
    let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(&head.signature) else {
        return Ok(Some("its signature is not base64: a forged head".into()));
    };
    if verifier.verify(&head.signed_message(), &signature).await? {
        Ok(None)
    } else {
        Ok(Some(format!(
            "its signature does not verify with `{}`: a forged or altered head",
            verifier.key_id()
        )))
    }
}

/// An ed25519 key from a file: a PKCS#8 private key (signs and verifies) or a public key
/// alone (32 bytes, hex), which is what an auditor holds.
pub struct Ed25519Key {
    pair: Option<ring::signature::Ed25519KeyPair>,
    public: Vec<u8>,
    key_id: String,
}

impl Ed25519Key {
    pub const ALGORITHM: &'static str = "ed25519";

    /// A new private key as PKCS#8 bytes, and its public key.
    pub fn generate() -> Result<(Vec<u8>, Vec<u8>)> {
        use ring::signature::KeyPair;
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| EngineError::System("cannot generate an ed25519 key".into()))?;
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|_| EngineError::System("cannot read the generated key".into()))?;
        Ok((pkcs8.as_ref().to_vec(), pair.public_key().as_ref().to_vec()))
    }

    pub fn from_pkcs8_file(path: &std::path::Path) -> Result<Self> {
        use ring::signature::KeyPair;
        let bytes = std::fs::read(path).map_err(|e| EngineError::io(path, e))?;
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&bytes).map_err(
            |e| {
                EngineError::Request(format!(
                    "`{}` is not an ed25519 PKCS#8 private key ({e}); `tregov log keygen` makes one",
                    path.display()
                ))
            },
        )?;
        let public = pair.public_key().as_ref().to_vec();
        Ok(Self {
            key_id: Self::key_id_of(&public),
            pair: Some(pair),
            public,
        })
    }

    pub fn from_public_key_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
        let public = hex::decode(text.trim())
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| {
                EngineError::Request(format!(
                    "`{}` is not an ed25519 public key (64 hex digits)",
                    path.display()
                ))
            })?;
        Ok(Self {
            key_id: Self::key_id_of(&public),
            pair: None,
            public,
        })
    }

    fn key_id_of(public: &[u8]) -> String {
        let fingerprint = crate::log::sha256_hex(public);
        format!("ed25519:{}", &fingerprint[..16])
    }
}

impl HeadSigner for Ed25519Key {
    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn algorithm(&self) -> &str {
        Self::ALGORITHM
    }

    fn can_sign(&self) -> bool {
        self.pair.is_some()
    }

    fn sign<'a>(&'a self, message: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(async move {
            let pair = self.pair.as_ref().ok_or_else(|| {
                EngineError::Request(format!(
                    "`{}` is a public key: it can check anchors but not sign them",
                    self.key_id
                ))
            })?;
            Ok(pair.sign(message).as_ref().to_vec())
        })
    }

    fn verify<'a>(&'a self, message: &'a [u8], signature: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let key =
                ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &self.public);
            Ok(key.verify(message, signature).is_ok())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::{Map, Value};

    use super::*;

    #[derive(Default)]
    struct Kept(Mutex<Vec<SignedHead>>);

    impl AnchorStore for Kept {
        fn put<'a>(&'a self, head: &'a SignedHead) -> BoxFuture<'a, Result<()>> {
            Box::pin(async move {
                self.0.lock().expect("lock").push(head.clone());
                Ok(())
            })
        }
        fn list(&self) -> BoxFuture<'_, Result<Vec<Listed>>> {
            Box::pin(async move {
                Ok(self
                    .0
                    .lock()
                    .expect("lock")
                    .iter()
                    .cloned()
                    .map(Ok)
                    .collect())
            })
        }
    }

    fn key(dir: &std::path::Path, name: &str) -> Ed25519Key {
        let (pkcs8, _) = Ed25519Key::generate().expect("generate");
        let path = dir.join(name);
        std::fs::write(&path, pkcs8).expect("write key");
        Ed25519Key::from_pkcs8_file(&path).expect("load key")
    }

    fn records(n: u64, tag: &str) -> Vec<Map<String, Value>> {
        (1..=n)
            .map(|i| {
                let mut m = Map::new();
                m.insert("kind".into(), Value::from(format!("{tag}-{i}")));
                m
            })
            .collect()
    }

    /// What an insider with write access to the data directory can do: build another chain
    /// with tregov's own code and put it, with its `HEAD`, in place of the real one.
    fn replace_log(data: &std::path::Path, with: Vec<Map<String, Value>>) {
        let other = tempfile::tempdir().expect("tempdir");
        DecisionLog::open(other.path())
            .expect("open")
            .append(with)
            .expect("append");
        let (from, to) = (other.path().join("log"), data.join("log"));
        for entry in std::fs::read_dir(&to).expect("read") {
            let path = entry.expect("entry").path();
            if path.is_file() && path.file_name().is_some_and(|n| n != "LOCK") {
                std::fs::remove_file(path).expect("remove");
            }
        }
        for entry in std::fs::read_dir(&from).expect("read") {
            let path = entry.expect("entry").path();
            if path.is_file() {
                std::fs::copy(&path, to.join(path.file_name().expect("name"))).expect("copy");
            }
        }
    }

    async fn anchored_log(dir: &std::path::Path, signer: &Ed25519Key, store: &Kept) -> DecisionLog {
        let log = DecisionLog::open(dir).expect("open");
        log.append(records(5, "real")).expect("append");
        let mut anchorer = Anchorer::new(&log, signer, store, 1, Duration::from_secs(3600));
        anchorer.tick().await.expect("tick").expect("anchored");
        log
    }

    #[tokio::test]
    async fn an_untouched_log_checks_out_against_its_anchors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (signer, store) = (key(dir.path(), "k"), Kept::default());
        let log = anchored_log(dir.path(), &signer, &store).await;
        log.append(records(2, "later")).expect("append");
        let report = check_anchors(&log, &signer, &store).await.expect("check");
        assert!(report.ok, "{report:?}");
        assert_eq!(report.newest_good, Some(5));
    }

    #[tokio::test]
    async fn a_chain_rewritten_with_its_head_passes_verify_but_not_the_anchors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (signer, store) = (key(dir.path(), "k"), Kept::default());
        let log = anchored_log(dir.path(), &signer, &store).await;
        replace_log(dir.path(), records(6, "forged"));
        assert!(
            log.verify().expect("verify").ok,
            "the rewritten chain is self-consistent"
        );
        let report = check_anchors(&log, &signer, &store).await.expect("check");
        assert!(!report.ok);
        assert!(
            report.problems[0]
                .problem
                .contains("the chain was rewritten"),
            "{report:?}"
        );
    }

    #[tokio::test]
    async fn a_log_rolled_back_before_an_anchor_is_caught() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (signer, store) = (key(dir.path(), "k"), Kept::default());
        let log = anchored_log(dir.path(), &signer, &store).await;
        let mut kept = records(5, "real");
        kept.truncate(3);
        replace_log(dir.path(), kept);
        let report = check_anchors(&log, &signer, &store).await.expect("check");
        assert!(
            report.problems[0].problem.contains("rolled back"),
            "{report:?}"
        );
    }

    #[tokio::test]
    async fn a_head_signed_by_another_key_or_altered_after_signing_is_forged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (signer, store) = (key(dir.path(), "k"), Kept::default());
        let log = anchored_log(dir.path(), &signer, &store).await;
        let mut altered = store.0.lock().expect("lock")[0].clone();
        altered.seq = 4;
        store.0.lock().expect("lock").push(altered);
        let other = key(dir.path(), "other");
        let foreign = sign_head(&log, &other).await.expect("sign").expect("head");
        store.0.lock().expect("lock").push(foreign);
        let report = check_anchors(&log, &signer, &store).await.expect("check");
        let problems: Vec<&str> = report.problems.iter().map(|p| p.problem.as_str()).collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("does not verify"));
        assert!(problems[1].contains("not the configured key"));
    }

    #[tokio::test]
    async fn a_public_key_checks_anchors_but_cannot_sign() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (signer, store) = (key(dir.path(), "k"), Kept::default());
        let log = anchored_log(dir.path(), &signer, &store).await;
        let public = dir.path().join("k.pub");
        std::fs::write(&public, hex::encode(&signer.public)).expect("write");
        let auditor = Ed25519Key::from_public_key_file(&public).expect("public key");
        assert!(
            check_anchors(&log, &auditor, &store)
                .await
                .expect("check")
                .ok
        );
        assert!(!auditor.can_sign());
        assert!(sign_head(&log, &auditor).await.is_err());
    }

    #[tokio::test]
    async fn the_head_is_anchored_after_enough_records_or_enough_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (signer, store) = (key(dir.path(), "k"), Kept::default());
        let log = DecisionLog::open(dir.path()).expect("open");
        let mut anchorer = Anchorer::new(&log, &signer, &store, 10, Duration::from_secs(60));
        assert!(
            anchorer.tick().await.expect("tick").is_none(),
            "an empty log is not anchored"
        );
        log.append(records(3, "a")).expect("append");
        assert_eq!(anchorer.tick().await.expect("tick").map(|h| h.seq), Some(3));
        log.append(records(9, "b")).expect("append");
        assert!(
            anchorer.tick().await.expect("tick").is_none(),
            "9 records, 0 s: not yet"
        );
        let now = Instant::now();
        assert!(
            anchorer.due(12, now + Duration::from_secs(61)),
            "due once the time is up"
        );
        assert!(
            !anchorer.due(3, now + Duration::from_secs(61)),
            "nothing new: never due"
        );
        log.append(records(1, "c")).expect("append");
        assert_eq!(
            anchorer.tick().await.expect("tick").map(|h| h.seq),
            Some(13)
        );
        let mut restarted = Anchorer::new(&log, &signer, &store, 10, Duration::from_secs(60));
        assert!(
            restarted.tick().await.expect("tick").is_none(),
            "the store's last anchor is read at start"
        );
    }
}
