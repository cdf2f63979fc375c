//! The export thread: takes the newest queued batch, encodes it and POSTs it; after a failure it
//! waits (doubling the wait up to a ceiling) before the next attempt, which sends whatever batch
//! is newest by then: every batch is cumulative, so a later one carries all an earlier one did.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;

use crate::Shared;
use crate::encode;
use crate::sink::Batch;

/// OTLP/HTTP's binary protobuf encoding.
pub const CONTENT_TYPE: &str = "application/x-protobuf";
/// The most of an answer's body read (an error message is shown from it; a success's body is
/// not needed).
const MAX_ANSWER: u64 = 64 * 1024;

pub(crate) struct Sender {
    pub(crate) agent: ureq::Agent,
    pub(crate) endpoint: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) resource: Vec<KeyValue>,
    pub(crate) backoff: (Duration, Duration),
}

impl Sender {
    pub(crate) fn agent(timeout: Duration) -> ureq::Agent {
        ureq::Agent::config_builder()
            // Connect, send and the whole answer: a hanging endpoint costs this, no more.
            .timeout_global(Some(timeout))
            // A non-2xx status is an answer to count, with its body as the error's text.
            .http_status_as_error(false)
            .build()
            .into()
    }

    /// One POST: the data points the endpoint rejected (a partial success), or the error's text.
    fn send(&self, batch: &Batch) -> Result<u64, String> {
        let body = encode::request(batch, &self.resource).encode_to_vec();
        let mut request = self
            .agent
            .post(&self.endpoint)
            .header("Content-Type", CONTENT_TYPE);
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let mut answer = request.send(&body[..]).map_err(|e| e.to_string())?;
        let status = answer.status();
        // Read (up to a bound) either way, so the connection can carry the next request.
        let body = (answer.body_mut().with_config().limit(MAX_ANSWER))
            .read_to_vec()
            .unwrap_or_default();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned();
            return Err(format!("HTTP {status}: {text}"));
        }
        // An empty or undecodable body is a full success: only a partial one says otherwise.
        let partial = ExportMetricsServiceResponse::decode(&body[..])
            .ok()
            .and_then(|r| r.partial_success);
        Ok(partial.map_or(0, |p| u64::try_from(p.rejected_data_points).unwrap_or(0)))
    }

    pub(crate) fn run(self, shared: Arc<Shared>) {
        let (first_pause, max_pause) = self.backoff;
        let mut pause = first_pause;
        while let Some(batch) = shared.queue.take_newest(&shared.counters) {
            match self.send(&batch) {
                Ok(rejected) => {
                    shared.counters.add_ok(rejected);
                    pause = first_pause;
                }
                Err(error) => {
                    shared.counters.add_failed(error);
                    // Closed: the last batch gets its one attempt at once.
                    shared.queue.pause_unless_closed(pause);
                    pause = (pause * 2).min(max_pause);
                }
            }
        }
    }
}
