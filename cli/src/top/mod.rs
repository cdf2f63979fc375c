//! `laptime top --url http://127.0.0.1:9898`: a live terminal view of a running process's stages,
//! read from its `/stats` endpoint (`laptime::export::stats_json`, feature `http`).
//!
//! * [`client`]: one bounded `GET` (a deadline over connect, write and every read);
//! * [`model`]: the document's fields, the p99 history kept for the sparklines, window and sort;
//! * [`view`]: the state drawn as a ratatui frame, or as plain text for `--once`;
//! * [`app`]: the loop (keys, poller thread, terminal set-up and restore).
//!
//! A process that does not answer, answers garbage or goes away is said so on the status line
//! (the last figures stay, marked with their age) and asked again every interval.

pub mod app;
pub mod client;
pub mod model;
pub mod view;

use std::time::{Duration, Instant};

use client::Endpoint;
use model::State;

/// What `top` was asked to watch, and how.
#[derive(Debug, Clone)]
pub struct TopOptions {
    /// The process's endpoint.
    pub endpoint: Endpoint,
    /// The window to show first (`None`: the process's first window).
    pub window: Option<String>,
    /// How often to ask (and retry).
    pub interval: Duration,
    /// The most one request may take, connect to last byte.
    pub timeout: Duration,
}

/// One frame as plain text (`--once`), or why the process could not be read.
pub fn once(options: &TopOptions) -> Result<String, String> {
    let mut state = State::new(options.endpoint.stats_url(None), options.window.clone());
    let now = Instant::now();
    state.apply(fetch(options), now);
    if let Some(failure) = state.failure {
        return Err(failure.message);
    }
    Ok(view::text_frame(&state, now))
}

/// The endpoint's document as it came (`--json`), or why the process could not be read.
pub fn fetch(options: &TopOptions) -> Result<Vec<u8>, String> {
    options
        .endpoint
        .get_stats(options.window.as_deref(), options.timeout)
}
