// What the `http_request` fuzz target asserts for one input, shared with
// `tests/fuzz_regressions.rs` (which replays `fuzz/regressions/http_request/*` on stable): the
// `/metrics` server's request-head handling never panics, answers what its module docs promise
// (checked against `httparse` run on the whole input at once, so an answer that depends on how the
// bytes were split into reads is caught), routes a well-formed `GET /metrics` head to the metrics,
// and answers `431` to a head past the size or header-count limit.
//
// Input layout: bytes 0-1 pick the head buffer size (256 B to 16 KiB, little endian), byte 2 the
// size of each read (0: one read), the rest is what the client sends before closing.

use laptime::export::http::{MAX_HEADERS, answer_for_fuzzing};
use laptime::export::stats_json::parse_query;

/// The body the fuzzing exposition serves on `/metrics`.
const METRICS_BODY: &str = "fuzz_metrics 1\n";
/// Its `/health` body.
const HEALTH_BODY: &str = "ok\n";

/// Smallest and largest head buffer tried: small buffers make the limit easy to cross.
const MIN_HEAD: usize = 256;
const MAX_HEAD: usize = 16 * 1024;

pub fn check_http_request(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let max_header_bytes =
        MIN_HEAD + usize::from(u16::from_le_bytes([data[0], data[1]])) % (MAX_HEAD - MIN_HEAD + 1);
    let read_size = usize::from(data[2]);
    let sent = &data[3..];
    check_raw(sent, read_size, max_header_bytes);
    check_well_formed_metrics_get(sent, read_size, max_header_bytes);
}

/// Splits `sent` into reads of `read_size` bytes (0: one read).
fn reads(sent: &[u8], read_size: usize) -> Vec<&[u8]> {
    if read_size == 0 {
        vec![sent]
    } else {
        sent.chunks(read_size).collect()
    }
}

/// An answer's status code, headers' `Content-Length` and body; panics if it is not a well-formed
/// HTTP/1.1 answer that closes the connection.
fn split_answer(answer: &[u8]) -> (u16, usize, &[u8]) {
    let text_end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an answer has a whole head");
    let head = std::str::from_utf8(&answer[..text_end]).expect("an answer head is text");
    let body = &answer[text_end + 4..];
    let status_line = head.lines().next().unwrap();
    let status: u16 = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("every answer has a Content-Length")
        .parse()
        .expect("a numeric Content-Length");
    assert!(
        head.lines().any(|l| l == "Connection: close"),
        "every answer closes the connection: {head:?}"
    );
    (status, length, body)
}

/// What the module docs promise for a client that sent `sent` and closed, derived from `httparse`
/// parsing everything that fits in the buffer at once: (status, body of a GET, HEAD request), or
/// `None` for no answer.
fn expected(sent: &[u8], max_header_bytes: usize) -> Option<(u16, Option<&'static str>, bool)> {
    let received = &sent[..sent.len().min(max_header_bytes)];
    let full = received.len() == max_header_bytes;
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(received) {
        Ok(httparse::Status::Complete(_)) => {
            let target = origin_form(request.path.unwrap_or(""));
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let head_only = request.method == Some("HEAD");
            let known_method = matches!(request.method, Some("GET" | "HEAD"));
            // A `/stats` query is read with the head: a bad one is refused whatever the method.
            let stats_query = (path == "/stats").then(|| parse_query(query).is_ok());
            Some(match path {
                "/stats" if stats_query == Some(false) => (400, None, false),
                "/metrics" | "/health" | "/stats" if !known_method => (405, None, false),
                // The fuzzing exposition has no snapshot.
                "/stats" => (503, None, head_only),
                "/metrics" => (200, Some(METRICS_BODY), head_only),
                "/health" => (200, Some(HEALTH_BODY), head_only),
                _ => (404, None, head_only),
            })
        }
        Ok(httparse::Status::Partial) if full => Some((431, None, false)),
        Ok(httparse::Status::Partial) => None,
        Err(httparse::Error::TooManyHeaders) => Some((431, None, false)),
        Err(_) => Some((400, None, false)),
    }
}

/// The target as a path: an absolute-form target (RFC 9112 §3.2.2) naming the fuzzing server
/// (`answer_for_fuzzing` listens on the default 127.0.0.1:9898) becomes what follows its
/// authority (`/` if nothing does); any other target stays as it is.
fn origin_form(target: &str) -> &str {
    let Some(rest) = target
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case("http://"))
        .map(|_| &target[7..])
    else {
        return target;
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let ours = ["127.0.0.1", "127.0.0.1:9898", "localhost", "localhost:9898"]
        .iter()
        .any(|a| a.eq_ignore_ascii_case(authority));
    match (ours, path.is_empty()) {
        (false, _) => target,
        (true, true) => "/",
        (true, false) => path,
    }
}

/// Arbitrary bytes: the answer is the one the docs give for what fits in the buffer, however the
/// bytes were split into reads.
fn check_raw(sent: &[u8], read_size: usize, max_header_bytes: usize) {
    let answer = answer_for_fuzzing(&reads(sent, read_size), max_header_bytes);
    let want = expected(sent, max_header_bytes);
    let (answer, (status, body, head_only)) = match (answer, want) {
        (None, None) => return,
        (Some(a), Some(w)) => (a, w),
        (a, w) => panic!(
            "server answered {:?}, expected {w:?}",
            a.map(|a| String::from_utf8_lossy(&a).into_owned())
        ),
    };
    let (got_status, length, got_body) = split_answer(&answer);
    assert_eq!(got_status, status, "status for this head");
    if head_only {
        assert!(got_body.is_empty(), "a HEAD answer has no body");
    } else {
        assert_eq!(
            got_body.len(),
            length,
            "Content-Length is the body's length"
        );
    }
    if let (Some(body), false) = (body, head_only) {
        assert_eq!(got_body, body.as_bytes());
    }
}

/// A well-formed `GET /metrics` head built from the input (a query, up to 40 headers with names
/// and values taken from the bytes), followed by the input as trailing bytes, read in the
/// input's read size: the metrics when the head fits the buffer and has at most
/// [`MAX_HEADERS`] headers, `431` otherwise.
fn check_well_formed_metrics_get(sent: &[u8], read_size: usize, max_header_bytes: usize) {
    let token =
        |b: &u8| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789-_"[usize::from(*b) % 38]);
    // Visible ASCII and spaces inside a value: what RFC 9110 allows, less obs-text.
    let value = |b: &u8| char::from(0x20 + b % 0x5f);
    let count = sent.first().map_or(0, |b| usize::from(*b) % 41);
    let mut head = String::from("GET /metrics");
    if sent.len() > 1 && sent[1] % 2 == 1 {
        head.push('?');
        head.extend(sent.iter().take(16).map(token));
    }
    head.push_str(" HTTP/1.1\r\n");
    for (i, chunk) in sent
        .chunks(7)
        .chain(std::iter::repeat(&b"v"[..]))
        .take(count)
        .enumerate()
    {
        head.push_str(&format!("X-{i}-"));
        head.extend(chunk.iter().map(token));
        head.push_str(": ");
        // A value neither starts nor ends with a space (those would be trimmed, not refused).
        head.push('v');
        head.extend(chunk.iter().map(value));
        head.push_str("v\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.clone().into_bytes();
    bytes.extend_from_slice(sent);

    let answer = answer_for_fuzzing(&reads(&bytes, read_size), max_header_bytes)
        .expect("a whole head, or a full buffer, is always answered");
    let (status, length, body) = split_answer(&answer);
    if count <= MAX_HEADERS && head.len() <= max_header_bytes {
        assert_eq!(
            (status, body),
            (200, METRICS_BODY.as_bytes()),
            "a well-formed GET /metrics ({} bytes, {count} headers) must get the metrics: {head:?}",
            head.len()
        );
        assert_eq!(length, body.len());
    } else {
        assert_eq!(
            status,
            431,
            "a head of {} bytes (buffer {max_header_bytes}) with {count} headers (limit \
             {MAX_HEADERS}) must get 431",
            head.len()
        );
    }
}
