//! The AWS emulator: moto's server, installed by `scripts/install-moto` into a project-local
//! virtualenv, started on 127.0.0.1 on a free port for one test and stopped when it ends.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::workspace_root;

/// The `moto_server` executable, installed once per test run.
pub fn moto_server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = Command::new(workspace_root().join("scripts/install-moto"))
            .stderr(Stdio::inherit())
            .output()
            .expect("scripts/install-moto runs");
        assert!(out.status.success(), "installing moto failed");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string())
    })
    .clone()
}

pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    /// Starts a fresh emulator and waits until it answers.
    ///
    /// Regression: two tests could be handed the same free port; the second emulator failed
    /// to bind it, and its test talked to the first test's emulator (a record of one test
    /// showed up in the other's trail). A start counts only once this emulator's own process
    /// listens on the port; otherwise it starts again on another.
    pub fn start() -> Self {
        for _ in 0..5 {
            if let Some(moto) = Self::try_start() {
                return moto;
            }
        }
        panic!("moto_server did not start on a port of its own in 5 tries");
    }

    fn try_start() -> Option<Self> {
        let bin = moto_server_bin();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(match std::env::var_os("TREGOV_MOTO_LOG") {
                // Its request log, to see what a hanging test waits for.
                Some(path) => {
                    std::fs::File::create(path).map_or_else(|_| Stdio::null(), Stdio::from)
                }
                None => Stdio::null(),
            })
            .spawn()
            .expect("moto_server starts");
        let mut moto = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if matches!(moto.child.try_wait(), Ok(Some(_))) {
                // It could not bind (another took the port): the Drop reaps it.
                return None;
            }
            if listens_on(moto.child.id(), port) && moto.get("/moto-api/data.json").is_some() {
                return Some(moto);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("moto_server did not answer on port {port} within 60 s");
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A plain HTTP GET on the emulator (its `/moto-api/` endpoints), body if 200.
    pub fn get(&self, path: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        let ok = buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200");
        ok.then(|| buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
    }

    /// Environment for a `tregov` process talking to this emulator with fake credentials.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ENDPOINT_URL".into(), self.endpoint()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
            ("AWS_CONFIG_FILE".into(), "/dev/null".into()),
            ("AWS_SHARED_CREDENTIALS_FILE".into(), "/dev/null".into()),
        ]
    }

    /// An SDK configuration for seeding the emulator from a test.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .credentials_provider(aws_credential_types::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .load()
            .await
    }

    /// Creates `buckets` with versioning on (egress pins object versions).
    pub async fn versioned_buckets(&self, buckets: &[&str]) {
        let s3 = self.s3().await;
        for bucket in buckets {
            s3.create_bucket()
                .bucket(*bucket)
                .send()
                .await
                .expect("bucket");
            s3.put_bucket_versioning()
                .bucket(*bucket)
                .versioning_configuration(
                    aws_sdk_s3::types::VersioningConfiguration::builder()
                        .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                        .build(),
                )
                .send()
                .await
                .expect("versioning");
        }
    }

    /// Puts `body` at `key` in `bucket` (a researcher saving a file, say).
    pub async fn put_object(&self, bucket: &str, key: &str, body: &str) {
        self.s3()
            .await
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .expect("put");
    }

    /// Runs `script` with the emulator's own boto3 (for a service the tests have no Rust SDK
    /// crate for: EventBridge); its stdout.
    pub fn python(&self, script: &str) -> String {
        let python = moto_server_bin().with_file_name("python");
        let out = Command::new(python)
            .args(["-c", script])
            .envs(self.env())
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "{script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A new SQS queue whose messages come back `visibility_seconds` after a receive that
    /// did not delete them; its URL.
    pub fn queue(&self, name: &str, visibility_seconds: u32) -> String {
        self.python(&format!(
            "import boto3; print(boto3.client('sqs').create_queue(QueueName='{name}', Attributes={{'VisibilityTimeout': '{visibility_seconds}'}})['QueueUrl'])"
        ))
    }

    /// Messages in the queue: waiting, and received but not deleted.
    pub fn queue_depth(&self, url: &str) -> (u64, u64) {
        let out = self.python(&format!(
            "import boto3; a = boto3.client('sqs').get_queue_attributes(QueueUrl='{url}', AttributeNames=['All'])['Attributes']; print(a['ApproximateNumberOfMessages'], a['ApproximateNumberOfMessagesNotVisible'])"
        ));
        let mut n = out
            .split_whitespace()
            .map(|n| n.parse::<u64>().expect("a count"));
        (n.next().unwrap_or(0), n.next().unwrap_or(0))
    }

    /// An EventBridge rule sending CloudTrail management events of the governed services to
    /// a new queue, as `deploy/` sets it up; the queue's URL.
    pub fn cloudtrail_events_queue(&self) -> String {
        self.python(
            "import boto3, json\n\
sqs = boto3.client('sqs'); events = boto3.client('events')\n\
url = sqs.create_queue(QueueName='tregov-cloudtrail-events')['QueueUrl']\n\
arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=['QueueArn'])['Attributes']['QueueArn']\n\
events.put_rule(Name='tregov-cloudtrail-events', EventPattern=json.dumps({'detail-type': ['AWS API Call via CloudTrail'], 'source': ['aws.lakeformation', 'aws.iam', 'aws.ec2', 'aws.sagemaker']}))\n\
events.put_targets(Rule='tregov-cloudtrail-events', Targets=[{'Id': 'tregov', 'Arn': arn}])\n\
print(url)",
        )
    }

    /// `record` as EventBridge delivers a CloudTrail management event (`PutEvents`, through
    /// the rule of `cloudtrail_events_queue`).
    pub fn put_cloudtrail_event(&self, record: &serde_json::Value) {
        let source = record["eventSource"]
            .as_str()
            .and_then(|s| s.strip_suffix(".amazonaws.com"))
            .expect("an eventSource");
        let detail = serde_json::to_string(&record.to_string()).expect("quoted");
        self.python(&format!(
            "import boto3; r = boto3.client('events').put_events(Entries=[{{'Source': 'aws.{source}', 'DetailType': 'AWS API Call via CloudTrail', 'Detail': {detail}}}]); assert r['FailedEntryCount'] == 0, r"
        ));
    }

    /// S3 event notifications for objects created in `bucket`, to a new queue; its URL.
    pub fn object_created_queue(&self, bucket: &str) -> String {
        self.python(&format!(
            "import boto3\n\
sqs = boto3.client('sqs')\n\
url = sqs.create_queue(QueueName='tregov-log-files')['QueueUrl']\n\
arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=['QueueArn'])['Attributes']['QueueArn']\n\
boto3.client('s3').put_bucket_notification_configuration(Bucket='{bucket}', NotificationConfiguration={{'QueueConfigurations': [{{'QueueArn': arn, 'Events': ['s3:ObjectCreated:*']}}]}})\n\
print(url)"
        ))
    }

    pub async fn s3(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::from(&self.sdk_config().await)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Creates an IAM role (with an empty trust policy) carrying `tags`.
    pub async fn create_role(&self, name: &str, tags: &[(&str, &str)]) {
        let iam = aws_sdk_iam::Client::new(&self.sdk_config().await);
        let tags = tags
            .iter()
            .map(|(k, v)| {
                aws_sdk_iam::types::Tag::builder()
                    .key(*k)
                    .value(*v)
                    .build()
                    .expect("tag")
            })
            .collect();
        iam.create_role()
            .role_name(name)
            .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[]}"#)
            .set_tags(Some(tags))
            .send()
            .await
            .expect("role");
    }

    /// Launches an EC2 instance carrying `tags` that runs as the role `role` (through an
    /// instance profile of the same name, created here), and returns its id.
    pub async fn run_instance_as_role(&self, role: &str, tags: &[(&str, &str)]) -> String {
        let profile = self.create_instance_profile(role, role).await;
        self.run_instance_as(Some(&profile), tags).await
    }

    /// Creates an instance profile holding the role `role`, and returns its ARN.
    async fn create_instance_profile(&self, name: &str, role: &str) -> String {
        let iam = aws_sdk_iam::Client::new(&self.sdk_config().await);
        let out = iam
            .create_instance_profile()
            .instance_profile_name(name)
            .send()
            .await
            .expect("instance profile");
        iam.add_role_to_instance_profile()
            .instance_profile_name(name)
            .role_name(role)
            .send()
            .await
            .expect("role in profile");
        out.instance_profile()
            .map(|p| p.arn().to_string())
            .unwrap_or_default()
    }

    /// Launches an EC2 instance carrying `tags` (a workspace, when they are TRE tags) and
    /// returns its id.
    pub async fn run_instance(&self, tags: &[(&str, &str)]) -> String {
        self.run_instance_as(None, tags).await
    }

    /// Like `run_instance`, running as the instance profile `profile_arn`.
    async fn run_instance_as(&self, profile_arn: Option<&str>, tags: &[(&str, &str)]) -> String {
        let ec2 = aws_sdk_ec2::Client::new(&self.sdk_config().await);
        let mut spec = aws_sdk_ec2::types::TagSpecification::builder()
            .resource_type(aws_sdk_ec2::types::ResourceType::Instance);
        for (k, v) in tags {
            spec = spec.tags(aws_sdk_ec2::types::Tag::builder().key(*k).value(*v).build());
        }
        let out = ec2
            .run_instances()
            .image_id("ami-12c6146b")
            .min_count(1)
            .max_count(1)
            .set_tag_specifications((!tags.is_empty()).then(|| vec![spec.build()]))
            .set_iam_instance_profile(profile_arn.map(|arn| {
                aws_sdk_ec2::types::IamInstanceProfileSpecification::builder()
                    .arn(arn)
                    .build()
            }))
            .send()
            .await
            .expect("instance");
        out.instances()
            .first()
            .and_then(|i| i.instance_id())
            .unwrap_or_default()
            .to_string()
    }
}

/// Whether process `pid` holds the socket listening on 127.0.0.1:`port` (from `/proc`).
fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let wanted = format!(":{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address, state 0A (LISTEN), inode.
            (fields.get(1)?.ends_with(&wanted) && *fields.get(3)? == "0A")
                .then(|| fields.get(9).map(|i| format!("socket:[{i}]")))
                .flatten()
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| inodes.iter().any(|i| target.to_string_lossy() == *i))
    })
}
