//! Real-time CloudTrail events: an EventBridge rule delivers the governed accounts'
//! management events ("AWS API Call via CloudTrail", the CloudTrail record as `detail`) to an
//! SQS queue, and the daemon long-polls it.
//!
//! A message is deleted only after its event is stored (or it is not one of ours); a message
//! that cannot be read stays, and the queue's redrive policy moves it to its dead-letter queue
//! after a few receives. Events are keyed by `eventID`, so the same event arriving again, or
//! later in the trail's log file, is stored once.
//!
//! An event from the queue only says where to look: the governor re-reads what it names from
//! AWS before planning, so a forged message can cause a read, never a grant. Its record is
//! kept under the queue message that brought it (`eventbridge:<queue>/<account>/CloudTrail/
//! <region>/<message id>`), apart from the digest-signed log files.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use serde::Deserialize;
use serde_json::value::RawValue;
use tregov_config::aws::Aws;
use tregov_config::Config;
use tregov_engine::events::{
    EventStore, FileBatch, FileBody, FileEnd, ObservedChange, StoredEvent,
};

use crate::cloudtrail_parse::RecordReader;
use crate::CollectError;

/// The `detail-type` EventBridge gives CloudTrail management events.
pub const CLOUDTRAIL_DETAIL_TYPE: &str = "AWS API Call via CloudTrail";

/// SQS's longest long poll.
const WAIT_SECONDS: i32 = 20;

/// The queue of real-time CloudTrail events.
pub struct EventsQueue {
    sqs: aws_sdk_sqs::Client,
    url: String,
    /// The governed accounts: events of any other are not ours.
    accounts: BTreeSet<String>,
    egress_bucket: Option<String>,
}

/// What one receive stored.
#[derive(Debug, Default)]
pub struct Received {
    /// The governed changes among the stored events.
    pub changes: Vec<ObservedChange>,
    /// When the earliest message carrying a change arrived in the queue (`SentTimestamp`).
    pub arrived: Option<SystemTime>,
    /// Messages stored and deleted.
    pub stored: usize,
    /// Messages that were not governed accounts' CloudTrail events, deleted.
    pub ignored: usize,
    /// Messages that could not be read, left for the redrive policy.
    pub unreadable: usize,
}

/// One message read: its event, or why it is not one.
enum Read {
    Event {
        key: String,
        event: Box<StoredEvent>,
    },
    NotOurs(String),
    Unreadable(String),
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "detail-type")]
    detail_type: String,
    /// The account the event happened in, as EventBridge says (moto 5.2 leaves it out).
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    region: String,
    #[serde(borrow)]
    detail: &'a RawValue,
}

/// The one field of the record read here: the account, when the envelope lacks it.
#[derive(Deserialize)]
struct Recipient {
    #[serde(rename = "recipientAccountId", default)]
    recipient_account_id: Option<String>,
}

impl EventsQueue {
    pub async fn build(config: &Config, aws: &Aws) -> Option<Self> {
        let ct = config.cloudtrail.as_ref()?;
        let url = ct.events_queue_url.clone()?;
        let sdk = aws.for_role(ct.role_arn.as_deref()).await;
        Some(Self {
            sqs: aws_sdk_sqs::Client::new(&sdk),
            url,
            accounts: config
                .projects
                .iter()
                .map(|p| p.account_id.clone())
                .collect(),
            egress_bucket: ct.egress_bucket.clone(),
        })
    }

    /// Long-polls the queue for ever, storing each batch and handing its changes to
    /// `on_changes`; a failed receive or store is retried after a pause that grows.
    pub async fn run(
        self,
        store: Arc<EventStore>,
        on_changes: impl Fn(Vec<ObservedChange>, SystemTime) + Send,
    ) {
        tracing::info!(queue = %self.url, "reading real-time CloudTrail events");
        let mut failures = 0u32;
        loop {
            match self.receive(&store).await {
                Ok(received) => {
                    failures = 0;
                    if let (false, Some(arrived)) = (received.changes.is_empty(), received.arrived)
                    {
                        on_changes(received.changes, arrived);
                    }
                }
                Err(error) => {
                    failures += 1;
                    let pause = Duration::from_secs(1 << failures.min(6));
                    tracing::error!(queue = %self.url, %error, retry_in_s = pause.as_secs(),
                        "real-time events not read; the trail's log files still are");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// One long poll: the events received are stored in one transaction, then their
    /// messages deleted. Nothing is deleted when the store fails.
    pub async fn receive(&self, store: &EventStore) -> Result<Received, CollectError> {
        let answer = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .wait_time_seconds(WAIT_SECONDS)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(|e| CollectError::aws("sqs:ReceiveMessage", &self.url, e))?;
        let mut received = Received::default();
        let mut events: Vec<(String, StoredEvent, SystemTime)> = Vec::new();
        let mut done: Vec<&Message> = Vec::new();
        for message in answer.messages() {
            match self.read(message) {
                Read::Event { key, event } => {
                    events.push((key, *event, sent_at(message)));
                    done.push(message);
                }
                Read::NotOurs(why) => {
                    tracing::debug!(queue = %self.url, message = message.message_id(), why, "not a governed CloudTrail event");
                    received.ignored += 1;
                    done.push(message);
                }
                Read::Unreadable(why) => {
                    tracing::warn!(queue = %self.url, message = message.message_id(), why,
                        "unreadable event message left for the dead-letter queue");
                    received.unreadable += 1;
                }
            }
        }
        if !events.is_empty() {
            let mut batch: Vec<FileBatch> = events
                .iter()
                .map(|(key, event, _)| FileBatch {
                    key,
                    events: std::slice::from_ref(event),
                    end: Some(FileEnd {
                        etag: "",
                        body: FileBody::Absent,
                        records: 1,
                        error: None,
                        sha256: None,
                    }),
                })
                .collect();
            store.ingest_files(&mut batch)?;
        }
        for (_, event, sent) in &events {
            if let Some(kind) = event.observation {
                received.changes.push(ObservedChange {
                    kind,
                    account: event.account.clone(),
                    target: event.target.clone(),
                });
                received.arrived = Some(received.arrived.map_or(*sent, |a| a.min(*sent)));
            }
        }
        received.stored = events.len();
        self.delete(&done).await;
        Ok(received)
    }

    /// Reads one message as an EventBridge CloudTrail event of a governed account.
    fn read(&self, message: &Message) -> Read {
        let Some(body) = message.body() else {
            return Read::Unreadable("the message has no body".into());
        };
        let envelope: Envelope = match serde_json::from_str(body) {
            Ok(e) => e,
            Err(e) => return Read::Unreadable(format!("not an EventBridge event: {e}")),
        };
        if envelope.detail_type != CLOUDTRAIL_DETAIL_TYPE {
            return Read::NotOurs(format!("detail-type `{}`", envelope.detail_type));
        }
        let Ok(record) = serde_json::from_str::<Recipient>(envelope.detail.get()) else {
            return Read::Unreadable("`detail` is not a CloudTrail record".into());
        };
        let Some(account) = envelope.account.or(record.recipient_account_id) else {
            return Read::Unreadable("neither the event nor its record names an account".into());
        };
        if !self.accounts.contains(&account) {
            return Read::NotOurs(format!("account `{account}` is not governed"));
        }
        let queue = self.url.rsplit('/').next().unwrap_or("events");
        let key = format!(
            "eventbridge:{queue}/{account}/CloudTrail/{}/{}",
            envelope.region,
            message.message_id().unwrap_or_default()
        );
        let reader = RecordReader::new(&key, self.egress_bucket.as_deref());
        let (mut event, _) = reader.event(0, envelope.detail);
        // No log file holds this record (yet): it is kept whole with the event.
        event.raw = Some(envelope.detail.get().to_string());
        Read::Event {
            key,
            event: Box::new(event),
        }
    }

    /// Deletes handled messages; one that fails to go is received again and stored once.
    async fn delete(&self, messages: &[&Message]) {
        let handles: Vec<&str> = messages.iter().filter_map(|m| m.receipt_handle()).collect();
        match crate::queue::delete(&self.sqs, &self.url, &handles).await {
            Ok(0) => {}
            Ok(failed) => tracing::warn!(queue = %self.url, failed,
                "some handled messages were not deleted; they will be received and stored again, once"),
            Err(error) => tracing::warn!(queue = %self.url, %error,
                "handled messages not deleted; they will be received and stored again, once"),
        }
    }
}

/// When the message arrived in the queue; now, when SQS did not say.
fn sent_at(message: &Message) -> SystemTime {
    message
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
        .and_then(|ms| ms.parse::<u64>().ok())
        .map_or_else(SystemTime::now, |ms| {
            SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
        })
}
