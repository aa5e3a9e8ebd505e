//! What both of tregov's SQS queues share: deleting the messages that were handled.

use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;

use crate::CollectError;

/// Deletes the messages with these receipt handles, ten per call (SQS's batch limit);
/// how many SQS did not delete (they come back after their visibility timeout).
pub async fn delete(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    handles: &[&str],
) -> Result<usize, CollectError> {
    let mut failed = 0;
    for chunk in handles.chunks(10) {
        let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, handle)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(*handle)
                    .build()
                    .ok()
            })
            .collect();
        let out = sqs
            .delete_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| CollectError::aws("sqs:DeleteMessageBatch", url, e))?;
        failed += out.failed().len();
    }
    Ok(failed)
}
