//! `top`'s HTTP client: one `GET` on a std [`TcpStream`] with a deadline over the whole exchange
//! (connect, write, every read), the answer's head parsed by `httparse`, its body capped. A
//! process that does not answer, answers slowly or sends garbage costs at most the deadline and
//! [`MAX_ANSWER_BYTES`], never a hang.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The most bytes an answer may have (head and body); a larger one is refused.
pub const MAX_ANSWER_BYTES: usize = 16 << 20;

/// Headers an answer may carry.
const MAX_HEADERS: usize = 64;

/// Where the stats come from: `http://HOST[:PORT][/PATH]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    host: String,
    port: u16,
    /// The path of the stats document (`/stats` unless the URL names another).
    path: String,
}

impl Endpoint {
    /// Reads `http://HOST[:PORT][/PATH]` (a bare `HOST:PORT` is taken as `http://`). `PATH`
    /// empty or `/` means `/stats`; one ending in `/stats` is used as it is; another has
    /// `/stats` appended (a process that serves under a prefix).
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "--url {url:?}: {scheme} is not spoken here; laptime's endpoint is plain \
                     http, e.g. http://127.0.0.1:9898"
                ));
            }
            None => url,
        };
        let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        if path.contains('?') || path.contains('#') {
            return Err(format!(
                "--url {url:?}: give no query; top asks for the window itself"
            ));
        }
        let bad =
            || format!("--url {url:?}: expected http://HOST:PORT, e.g. http://127.0.0.1:9898");
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(bad)?;
                (host, after.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() || host.contains('@') {
            return Err(bad());
        }
        let port = match port {
            None => 80,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?,
        };
        let path = match path.trim_end_matches('/') {
            "" => "/stats".to_owned(),
            p if p.ends_with("/stats") => p.to_owned(),
            p => format!("{p}/stats"),
        };
        Ok(Endpoint {
            host: host.to_owned(),
            port,
            path,
        })
    }

    /// The URL of the stats document for `window` (`None`: the process's default window).
    pub fn stats_url(&self, window: Option<&str>) -> String {
        format!("http://{}{}", self.authority(), self.target(window))
    }

    /// `HOST:PORT` (brackets around an IPv6 address).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn target(&self, window: Option<&str>) -> String {
        match window {
            Some(w) => format!("{}?window={}", self.path, encode(w)),
            None => self.path.clone(),
        }
    }

    /// `GET`s the stats document for `window`, all within `timeout`: the body of a `200`, or
    /// what went wrong in one line (no answer, a refusal, another status with its body's first
    /// line).
    pub fn get_stats(&self, window: Option<&str>, timeout: Duration) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + timeout;
        let (status, body) = self.get(&self.target(window), deadline)?;
        if status == 200 {
            return Ok(body);
        }
        let said = String::from_utf8_lossy(&body);
        let said = said.lines().next().unwrap_or("").trim();
        let said: String = said.chars().take(200).collect();
        Err(format!("{} answered {status}: {said}", self.authority()))
    }

    fn get(&self, target: &str, deadline: Instant) -> Result<(u16, Vec<u8>), String> {
        let who = self.authority();
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?
            .collect();
        let mut stream = None;
        let mut last = format!("{who} has no address");
        for addr in addrs {
            let left = left(deadline).ok_or_else(|| format!("{who}: no answer in time"))?;
            match TcpStream::connect_timeout(&addr, left) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = format!("cannot connect to {who}: {e}"),
            }
        }
        let mut stream = stream.ok_or(last)?;
        let _ = stream.set_nodelay(true);
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {who}\r\nUser-Agent: laptime-top\r\n\
             Accept: application/json\r\nConnection: close\r\n\r\n"
        );
        let io = |e: std::io::Error| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                format!("{who}: no answer in time")
            } else {
                format!("{who}: {e}")
            }
        };
        let left_io = || left(deadline).ok_or_else(|| format!("{who}: no answer in time"));
        stream.set_write_timeout(Some(left_io()?)).map_err(io)?;
        stream.write_all(request.as_bytes()).map_err(io)?;
        let mut received = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            stream.set_read_timeout(Some(left_io()?)).map_err(io)?;
            let n = match stream.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io(e)),
            };
            received.extend_from_slice(&chunk[..n]);
            if received.len() > MAX_ANSWER_BYTES {
                return Err(format!(
                    "{who} answered more than {} MiB: not the stats document",
                    MAX_ANSWER_BYTES >> 20
                ));
            }
            match parse_answer(&received, n == 0) {
                Ok(Some(answer)) => return Ok(answer),
                Ok(None) => {}
                Err(why) => return Err(format!("{who} {why}")),
            }
        }
    }
}

/// Time left until `deadline`, `None` once it has passed.
fn left(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

/// `%`-encodes what is not unreserved (a window is `1s` or `cumulative`, but `µs` is not ASCII).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The status and body once `received` holds a whole answer; `None` to read more; the reason
/// when it is not HTTP or ended early. `closed`: the server closed its side.
fn parse_answer(received: &[u8], closed: bool) -> Result<Option<(u16, Vec<u8>)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut answer = httparse::Response::new(&mut headers);
    let head_len = match answer.parse(received) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if closed => {
            return Err(if received.is_empty() {
                "closed the connection without answering".to_owned()
            } else {
                "answered something that is not HTTP (cut short)".to_owned()
            });
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("answered something that is not HTTP ({e})")),
    };
    let status = answer.code.unwrap_or(0);
    let header = |name: &str| {
        answer
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
    };
    if header("transfer-encoding").is_some() {
        return Err("answered with a transfer encoding; laptime's endpoint sends none".to_owned());
    }
    let body = &received[head_len..];
    match header("content-length") {
        Some(length) => {
            let length: usize = length
                .parse()
                .map_err(|_| format!("answered a bad Content-Length {length:?}"))?;
            if length > MAX_ANSWER_BYTES {
                return Err(format!("announced {length} bytes: not the stats document"));
            }
            if body.len() >= length {
                Ok(Some((status, body[..length].to_vec())))
            } else if closed {
                Err(format!(
                    "closed the connection {} bytes into a {length}-byte answer",
                    body.len()
                ))
            } else {
                Ok(None)
            }
        }
        None if closed => Ok(Some((status, body.to_vec()))),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_stats_document() {
        let e = Endpoint::parse("http://127.0.0.1:9898").unwrap();
        assert_eq!(
            e.stats_url(Some("1s")),
            "http://127.0.0.1:9898/stats?window=1s"
        );
        assert_eq!(e.stats_url(None), "http://127.0.0.1:9898/stats");
        let e = Endpoint::parse("127.0.0.1:9898/").unwrap();
        assert_eq!(e.stats_url(None), "http://127.0.0.1:9898/stats");
        let e = Endpoint::parse("HTTP://[::1]:9898/app/stats").unwrap();
        assert_eq!(e.stats_url(None), "http://[::1]:9898/app/stats");
        let e = Endpoint::parse("http://localhost/app").unwrap();
        assert_eq!(
            e.stats_url(Some("250µs")),
            "http://localhost:80/app/stats?window=250%C2%B5s"
        );
        for bad in [
            "https://127.0.0.1:9898",
            "http://:9898",
            "http://127.0.0.1:0",
            "http://127.0.0.1:99999",
            "http://127.0.0.1:x",
            "http://u@127.0.0.1:9898",
            "http://127.0.0.1:9898/stats?window=1s",
            "http://[::1:9898",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers_are_read_to_their_length_and_garbage_is_named() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_answer(ok, false), Ok(Some((200, b"{}".to_vec()))));
        assert_eq!(parse_answer(&ok[..ok.len() - 1], false), Ok(None));
        assert!(parse_answer(&ok[..ok.len() - 1], true).is_err());
        assert_eq!(
            parse_answer(b"HTTP/1.1 503 X\r\n\r\nno", true),
            Ok(Some((503, b"no".to_vec())))
        );
        assert!(
            parse_answer(b"", true)
                .unwrap_err()
                .contains("without answering")
        );
        assert!(
            parse_answer(b"\x00\x01garbage\r\n\r\n", false)
                .unwrap_err()
                .contains("not HTTP")
        );
        assert!(
            parse_answer(
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
                false
            )
            .is_err()
        );
    }
}
