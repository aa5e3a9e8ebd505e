//! `tregov log anchor`, `log verify --anchors`, `log keygen`, and the daemon's anchoring.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;
use tregov_config::aws::Aws;
use tregov_config::Config;
use tregov_enforcers::anchor::{signer, S3Anchors};
use tregov_engine::anchor::{check_anchors, sign_head, Anchorer, Ed25519Key, HeadSigner};
use tregov_engine::log::DecisionLog;
use tregov_engine::{EngineError, Result};
use tregov_render::log as show_log;

use crate::output::{print_json, Format};

/// The `[log]` section with an anchor bucket, the bucket and the configured key.
async fn anchoring(config: &Config) -> Result<(S3Anchors, Box<dyn HeadSigner>)> {
    let missing = |what: &str| {
        EngineError::Request(format!(
            "`[log]` in the configuration needs {what}: see `examples/tregov.toml`"
        ))
    };
    let log = config
        .log
        .clone()
        .ok_or_else(|| missing("`anchor_bucket` and a key"))?;
    let aws = Aws::load(config).await;
    let store = S3Anchors::build(&aws, &log)
        .await?
        .ok_or_else(|| missing("`anchor_bucket`"))?;
    let signer = signer(&aws, &log)
        .await?
        .ok_or_else(|| missing("`signing_key`, `verify_key` or `kms_key_id`"))?;
    Ok((store, signer))
}

/// `tregov log anchor`: sign the head now and write it to the anchor bucket.
pub fn anchor_command(output: Format, config_path: &Path, data_dir: &Path) -> Result<ExitCode> {
    let config = Config::load(config_path)?;
    let log = DecisionLog::open(data_dir)?;
    crate::collect::runtime()?.block_on(async {
        let (store, signer) = anchoring(&config).await?;
        let Some(head) = sign_head(&log, signer.as_ref()).await? else {
            println!("empty log: nothing to anchor");
            return Ok(ExitCode::SUCCESS);
        };
        tregov_engine::anchor::AnchorStore::put(&store, &head).await?;
        match output {
            Format::Json => print_json(&json!(head)),
            Format::Text => println!(
                "anchored record {} ({}) signed by `{}`",
                head.seq, head.hash, head.key_id
            ),
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `tregov log verify --anchors`: the hash chain, then the chain against every anchor.
pub fn verify_command(output: Format, config_path: &Path, data_dir: &Path) -> Result<ExitCode> {
    let config = Config::load(config_path)?;
    let log = DecisionLog::open(data_dir)?;
    let chain = log.verify()?;
    crate::collect::runtime()?.block_on(async {
        let (store, signer) = anchoring(&config).await?;
        let anchors = check_anchors(&log, signer.as_ref(), &store).await?;
        match output {
            Format::Json => print_json(&json!({"chain": chain, "anchors": anchors})),
            Format::Text => {
                print!("{}", show_log::verify_text(&chain));
                print!("{}", show_log::anchors_text(&anchors));
            }
        }
        Ok(crate::cli::exit(chain.ok && anchors.ok))
    })
}

/// `tregov log keygen <path>`: a new ed25519 key, never over an existing file.
pub fn keygen_command(output: Format, path: &Path) -> Result<ExitCode> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (pkcs8, public) = Ed25519Key::generate()?;
    let public_path = path.with_extension("pub");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| EngineError::io(path, e))?;
    file.write_all(&pkcs8)
        .and_then(|()| file.sync_all())
        .map_err(|e| EngineError::io(path, e))?;
    std::fs::write(&public_path, format!("{}\n", hex::encode(&public)))
        .map_err(|e| EngineError::io(&public_path, e))?;
    let key = Ed25519Key::from_pkcs8_file(path)?;
    match output {
        Format::Json => print_json(&json!({
            "keyId": key.key_id(),
            "signingKey": path,
            "verifyKey": public_path,
        })),
        Format::Text => println!(
            "wrote `{}` (keep it from the data directory's writers) and `{}`; key id `{}`",
            path.display(),
            public_path.display(),
            key.key_id()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// How often the daemon looks whether an anchor is due (`anchor_seconds` is at least 10).
const LOOK: Duration = Duration::from_secs(5);

/// The daemon's anchoring: looks every few seconds and anchors when `[log]` says it is due.
/// A failure (the bucket unreachable, KMS throttling) is logged and tried again; the log
/// itself never waits for an anchor.
pub async fn run_anchorer(config: Config, aws: Aws, data_dir: std::path::PathBuf) {
    let Some(settings) = config.log.clone() else {
        return;
    };
    if settings.anchor_bucket.is_none() {
        return;
    }
    let built = async {
        let store = S3Anchors::build(&aws, &settings)
            .await?
            .ok_or_else(|| EngineError::Request("`[log] anchor_bucket` is not set".into()))?;
        let signer = signer(&aws, &settings)
            .await?
            .filter(|s| s.can_sign())
            .ok_or_else(|| {
                EngineError::Request(
                    "`[log]` needs `signing_key` or `kms_key_id` for the daemon to anchor".into(),
                )
            })?;
        Ok::<_, EngineError>((store, signer, DecisionLog::open(&data_dir)?))
    };
    let (store, signer, log) = match built.await {
        Ok(parts) => parts,
        Err(e) => {
            tracing::error!(error = %e.one_line(), "log anchoring is off");
            return;
        }
    };
    let mut anchorer = Anchorer::new(
        &log,
        signer.as_ref(),
        &store,
        settings.anchor_records,
        settings.anchor_every(),
    );
    loop {
        if let Err(e) = anchorer.tick().await {
            tracing::warn!(error = %e.one_line(), "could not anchor the log head; trying again");
        }
        tokio::time::sleep(LOOK).await;
    }
}
