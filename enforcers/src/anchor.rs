//! Anchors in S3 (under Object Lock where the bucket has it) and heads signed by KMS.

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use aws_sdk_s3::types::{ObjectLockEnabled, ObjectLockMode};
use aws_smithy_runtime_api::client::result::SdkError;
use tregov_config::aws::Aws;
use tregov_config::LogConfig;
use tregov_engine::anchor::{AnchorStore, Ed25519Key, HeadSigner, Listed, SignedHead};
use tregov_engine::collect::BoxFuture;
use tregov_engine::error::{EngineError, Result};

use crate::describe;

/// Signed heads as objects in a bucket.
pub struct S3Anchors {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    /// Mode and days to lock each anchor for; `None` when the bucket has no Object Lock.
    lock: Option<(ObjectLockMode, u32)>,
}

impl S3Anchors {
    /// Reads the bucket's Object Lock configuration once: anchors are locked when it has it.
    pub async fn build(aws: &Aws, config: &LogConfig) -> Result<Option<Self>> {
        let Some(bucket) = config.anchor_bucket.clone() else {
            return Ok(None);
        };
        let client = aws.s3(&aws.for_role(config.role_arn.as_deref()).await);
        let enabled = match client
            .get_object_lock_configuration()
            .bucket(&bucket)
            .send()
            .await
        {
            Ok(out) => out
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled())
                .is_some_and(|e| *e == ObjectLockEnabled::Enabled),
            Err(e) if is_code(&e, "ObjectLockConfigurationNotFoundError") => false,
            Err(e) => {
                return Err(EngineError::System(describe(
                    "s3:GetObjectLockConfiguration",
                    &e,
                )))
            }
        };
        if !enabled {
            tracing::warn!(bucket = %bucket, "the anchor bucket has no Object Lock: anchors can be deleted by whoever can write the bucket");
        }
        let mode = match config.object_lock_mode.as_str() {
            "compliance" => ObjectLockMode::Compliance,
            _ => ObjectLockMode::Governance,
        };
        Ok(Some(Self {
            client,
            bucket,
            prefix: config.anchor_prefix.clone(),
            lock: enabled.then_some((mode, config.object_lock_days)),
        }))
    }

    async fn read(&self, key: &str) -> std::result::Result<SignedHead, String> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| describe("s3:GetObject", &e))?;
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
            .into_bytes();
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    }
}

impl AnchorStore for S3Anchors {
    fn put<'a>(&'a self, head: &'a SignedHead) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let body =
                serde_json::to_vec_pretty(head).map_err(|e| EngineError::System(e.to_string()))?;
            let mut put = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(head.object_key(&self.prefix))
                .content_type("application/json")
                .body(body.into());
            if let Some((mode, days)) = &self.lock {
                let until = std::time::SystemTime::now()
                    + std::time::Duration::from_secs(u64::from(*days) * 86_400);
                put = put
                    .object_lock_mode(mode.clone())
                    .object_lock_retain_until_date(until.into());
            }
            put.send()
                .await
                .map_err(|e| EngineError::System(describe("s3:PutObject", &e)))?;
            Ok(())
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Listed>>> {
        Box::pin(async move {
            let mut keys = Vec::new();
            let mut pages = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&self.prefix)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page =
                    page.map_err(|e| EngineError::System(describe("s3:ListObjectsV2", &e)))?;
                keys.extend(
                    page.contents()
                        .iter()
                        .filter_map(|o| o.key().map(str::to_string)),
                );
            }
            keys.sort();
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                out.push(self.read(&key).await.map_err(|problem| (key, problem)));
            }
            Ok(out)
        })
    }
}

/// A KMS asymmetric key (`ECC_NIST_P256`) signing with `ECDSA_SHA_256`.
pub struct KmsSigner {
    client: aws_sdk_kms::Client,
    key_id: String,
}

impl KmsSigner {
    pub const ALGORITHM: &'static str = "ECDSA_SHA_256";

    pub async fn build(aws: &Aws, config: &LogConfig, key_id: &str) -> Self {
        let sdk = aws.for_role(config.role_arn.as_deref()).await;
        Self {
            client: aws_sdk_kms::Client::new(&sdk),
            key_id: key_id.to_string(),
        }
    }
}

impl HeadSigner for KmsSigner {
    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn algorithm(&self) -> &str {
        Self::ALGORITHM
    }

    fn can_sign(&self) -> bool {
        true
    }

    fn sign<'a>(&'a self, message: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(async move {
            let out = self
                .client
                .sign()
                .key_id(&self.key_id)
                .message(Blob::new(message))
                .message_type(MessageType::Raw)
                .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
                .send()
                .await
                .map_err(|e| EngineError::System(describe("kms:Sign", &e)))?;
            out.signature()
                .map(|s| s.as_ref().to_vec())
                .ok_or_else(|| EngineError::System("kms:Sign returned no signature".into()))
        })
    }

    fn verify<'a>(&'a self, message: &'a [u8], signature: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let sent = self
                .client
                .verify()
                .key_id(&self.key_id)
                .message(Blob::new(message))
                .message_type(MessageType::Raw)
                .signature(Blob::new(signature))
                .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
                .send()
                .await;
            match sent {
                Ok(out) => Ok(out.signature_valid()),
                // KMS answers a signature that does not verify with this error, not `false`.
                Err(e) if is_code(&e, "KMSInvalidSignatureException") => Ok(false),
                Err(e) => Err(EngineError::System(describe("kms:Verify", &e))),
            }
        })
    }
}

/// The signer `[log]` names: a key file, a public key, or KMS; `None` when it names none.
pub async fn signer(aws: &Aws, config: &LogConfig) -> Result<Option<Box<dyn HeadSigner>>> {
    Ok(
        match (&config.signing_key, &config.verify_key, &config.kms_key_id) {
            (Some(path), _, _) => Some(Box::new(Ed25519Key::from_pkcs8_file(path)?)),
            (_, Some(path), _) => Some(Box::new(Ed25519Key::from_public_key_file(path)?)),
            (_, _, Some(id)) => Some(Box::new(KmsSigner::build(aws, config, id).await)),
            _ => None,
        },
    )
}

fn is_code<E, R>(e: &SdkError<E, R>, code: &str) -> bool
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    e.as_service_error().and_then(|s| s.code()) == Some(code)
}
