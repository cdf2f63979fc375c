//! `laptime top` live, in a real terminal: `tmux` (Debian's package; `.ci/run` installs it) runs
//! it against the demo (`demo/`'s `trading_tick --listen 127.0.0.1:0`, its fetch stage slowed
//! so `tick_total` breaks its SLA), keys go in with `send-keys`, the screen comes back with
//! `capture-pane` (`-e` for the colours). Checked: the stages appear, the window keys switch the
//! window, the sort keys order the rows, SLA states are coloured (critical red, ok green), `q`
//! leaves the alternate screen and raw mode; and with the demo stopped (SIGSTOP), resumed and
//! then killed, `top` says so on screen, recovers, and keeps running until Ctrl-C, which
//! restores the terminal as `q` does.
//!
//! Each test has its own tmux server (`-L`, a unique socket name) and session, killed when the
//! test ends however it ends; the demo binds 127.0.0.1 and is killed by its own PID. Without
//! tmux the tests print SKIP, unless `CI` is set: then they fail. No assertion is on elapsed time;
//! every wait is bounded.

#[path = "../../tests/common/http_client.rs"]
mod http_client;
#[path = "../../tests/common/live.rs"]
mod live;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use live::{Lines, Reaped, find_tool, skip_or_fail, start_demo};

/// How long any one thing the test waits for may take to appear on screen.
const WAIT: Duration = Duration::from_secs(60);

/// A tmux server of this test's own running one session, killed on drop.
struct Tmux {
    tmux: PathBuf,
    socket: String,
    session: String,
    /// The server's socket file, removed on drop (tmux leaves it behind when killed).
    socket_path: Option<PathBuf>,
}

impl Tmux {
    /// Starts `command` (a shell line) in a detached 200×50 session.
    fn start(tmux: PathBuf, test: &str, command: &str) -> Tmux {
        let unique = format!("laptime-top-{test}-{}", std::process::id());
        let mut t = Tmux {
            tmux,
            socket: unique.clone(),
            session: unique,
            socket_path: None,
        };
        let ok = t
            .cmd(&[
                "new-session",
                "-d",
                "-s",
                &t.session,
                "-x",
                "200",
                "-y",
                "50",
                command,
            ])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "tmux new-session failed");
        t.socket_path = Some(PathBuf::from(t.display("#{socket_path}")));
        t
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.tmux);
        c.args(["-L", &self.socket, "-f", "/dev/null"]).args(args);
        c
    }

    fn send(&self, keys: &str) {
        let ok = self
            .cmd(&["send-keys", "-t", &self.session, keys])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "tmux send-keys {keys} failed");
    }

    /// The screen as text; with `colours`, with its escape sequences.
    fn screen(&self, colours: bool) -> String {
        let mut args = vec!["capture-pane", "-p", "-t", &self.session];
        if colours {
            args.push("-e");
        }
        let out = self.cmd(&args).output().expect("tmux capture-pane runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits (at most [`WAIT`]) for a screen `check` accepts; panics with the last screen.
    fn wait_for<T>(
        &self,
        what: &str,
        colours: bool,
        mut check: impl FnMut(&str) -> Option<T>,
    ) -> T {
        let until = Instant::now() + WAIT;
        loop {
            let screen = self.screen(colours);
            if let Some(found) = check(&screen) {
                return found;
            }
            assert!(Instant::now() < until, "never saw {what}:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_text(&self, text: &str) -> String {
        self.wait_for(text, false, |s| s.contains(text).then(|| s.to_owned()))
    }

    fn display(&self, format: &str) -> String {
        let out = self
            .cmd(&["display-message", "-p", "-t", &self.session, format])
            .output()
            .expect("tmux display-message runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // The server ends with its last session; kill-server is for a session that would not.
        for args in [&["kill-session", "-t", &self.session][..], &["kill-server"]] {
            let _ = self.cmd(args).stderr(std::process::Stdio::null()).status();
        }
        if let Some(path) = &self.socket_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// tmux, or SKIP (a failure under CI).
fn tmux() -> Option<PathBuf> {
    let found = find_tool("tmux");
    if found.is_none() {
        skip_or_fail("no tmux binary (apt-get install tmux)");
    }
    found
}

/// The demo, ticking long enough for the test, its fetch stage slowed ten times so `tick_total`
/// is over its critical p99 in every second. Keep its lines: the demo prints every second, and
/// its stdout pipe must stay read.
fn demo() -> (Reaped, Lines, String) {
    let (demo, lines, addr) =
        start_demo(&["--seconds", "600", "--slow", "stage_fetch_md=10"], "demo");
    (demo, lines, format!("http://{addr}"))
}

/// The shell line tmux runs: `top`, then its exit code and the terminal's modes once it is gone,
/// then a wait so the pane stays to be read.
fn top_command(url: &str, extra: &str) -> String {
    format!(
        "'{}' top --url {url} --interval-ms 200 {extra}; echo TOP-EXITED=$?; stty -a; sleep 600",
        env!("CARGO_BIN_EXE_laptime")
    )
}

/// The p99 column of each table row, top to bottom: the 5th word from the end (p99, p99.9,
/// max, misses, sla), as a name may be two words (`Σ exchange_req`).
fn p99s(screen: &str) -> Vec<f64> {
    screen
        .lines()
        .skip_while(|l| !l.starts_with("stage "))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            // From the right: the p99 trend (a sparkline, once a row has history), sla, misses,
            // max, p99.9, then p99; stage names may hold a space (`Σ exchange_req`).
            let mut fields: Vec<&str> = l.split_whitespace().collect();
            if fields
                .last()
                .is_some_and(|f| f.chars().all(|c| ('▁'..='█').contains(&c)))
            {
                fields.pop();
            }
            fields[fields.len() - 5].parse().unwrap()
        })
        .collect()
}

/// `key` (`q`, or `C-c`: a key in raw mode, not a signal) quits with 0, leaves the alternate
/// screen and gives the shell back its cooked, echoing terminal.
fn assert_quits_and_restores(t: &Tmux, key: &str) {
    t.send(key);
    let screen = t.wait_text("TOP-EXITED=");
    assert!(screen.contains("TOP-EXITED=0"), "{screen}");
    let modes = t.wait_for("stty's modes", false, |s| {
        s.contains("icanon").then(|| s.to_owned())
    });
    let words: Vec<&str> = modes.split_whitespace().collect();
    for mode in ["icanon", "echo", "isig"] {
        assert!(words.contains(&mode), "{mode} not restored:\n{modes}");
    }
    assert_eq!(
        t.display("#{alternate_on}"),
        "0",
        "still on the alternate screen"
    );
}

#[test]
fn top_shows_stages_switches_windows_sorts_colours_and_restores() {
    let Some(tmux) = tmux() else { return };
    let (_demo, _lines, url) = demo();
    let t = Tmux::start(tmux, "live", &top_command(&url, ""));
    t.wait_text("tick_total");
    let screen = t.wait_text("window 1s ·");
    for stage in [
        "tick_total",
        "stage_fetch_md",
        "stage_spread",
        "stage_emit",
        "exchange_req{",
    ] {
        assert!(screen.contains(stage), "{stage}:\n{screen}");
    }
    assert_eq!(
        t.display("#{alternate_on}"),
        "1",
        "top runs on the alternate screen"
    );

    for (key, window) in [("6", "60s"), ("c", "cumulative"), ("5", "5s")] {
        t.send(key);
        t.wait_text(&format!("window {window} ·"));
    }

    // Sort: stage, count, p50, then p99 (largest first), then reversed.
    for _ in 0..4 {
        t.send("s");
    }
    let descending = t.wait_for("rows by p99, largest first", false, |s| {
        let p = p99s(s);
        (s.contains("p99 µs▼") && p.len() >= 5 && p.windows(2).all(|w| w[0] >= w[1])).then_some(p)
    });
    t.send("r");
    let ascending = t.wait_for("rows by p99, smallest first", false, |s| {
        let p = p99s(s);
        (s.contains("p99 µs▲") && p.len() >= 5 && p.windows(2).all(|w| w[0] <= w[1])).then_some(p)
    });
    assert!(
        descending[0] > descending[descending.len() - 1],
        "{descending:?}"
    );
    assert!(
        ascending[0] < ascending[ascending.len() - 1],
        "{ascending:?}"
    );

    // Colours: a critical cell in red, an ok cell in green: the escape right before the word
    // sets colour 1 or 2 of the palette (tmux writes them as 38;5;N, or 31/32).
    let coloured = |s: &str, state: &str, codes: [&str; 2]| {
        codes
            .iter()
            .any(|c| s.contains(&format!("\x1b[{c}{state}")))
    };
    t.wait_for("a red critical and a green ok", true, |s| {
        (coloured(s, "critical", ["38;5;1m", "31m"]) && coloured(s, "ok ", ["38;5;2m", "32m"]))
            .then_some(())
    });

    assert_quits_and_restores(&t, "q");
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid} failed");
}

#[test]
fn top_says_when_the_process_stalls_or_goes_away_and_keeps_running() {
    let Some(tmux) = tmux() else { return };
    let (demo, _lines, url) = demo();
    let t = Tmux::start(tmux, "gone", &top_command(&url, "--timeout-ms 500"));
    t.wait_text("tick_total");

    // Stopped: it accepts connections (the kernel does) but answers nothing.
    signal(demo.id(), "-STOP");
    let screen = t.wait_text("no answer in time");
    assert!(
        screen.contains("NO DATA:") && screen.contains("tick_total"),
        "{screen}"
    );
    signal(demo.id(), "-CONT");
    t.wait_for("figures again", false, |s| {
        (!s.contains("NO DATA:")).then_some(())
    });

    // Gone: killed by its PID and reaped.
    drop(demo);
    let screen = t.wait_text("cannot connect");
    assert!(screen.contains("retrying every 200ms"), "{screen}");
    assert!(
        screen.contains("tick_total"),
        "the last figures stay:\n{screen}"
    );
    t.wait_text("failing for 2s");
    assert!(
        !t.screen(false).contains("TOP-EXITED"),
        "top ended by itself"
    );

    assert_quits_and_restores(&t, "C-c");
}
