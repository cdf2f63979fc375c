//! The live view's loop: a poller thread asks the process for the chosen window once per
//! interval (each request bounded by the client's deadline) while the loop draws, reads keys and
//! takes the poller's answers. A silent process delays only the poller, never a key or a frame.
//!
//! The terminal is in raw mode and on the alternate screen while the view runs; it is restored
//! when `q`, `Esc` or Ctrl-C ends it (in raw mode Ctrl-C is a key, not a signal), when drawing
//! fails, and on a panic (ratatui's panic hook restores it before the panic is reported).

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use ratatui::DefaultTerminal;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::TopOptions;
use super::model::State;
use super::view;

/// How long the loop waits for a key before looking for the poller's answers and redrawing.
const TICK: Duration = Duration::from_millis(100);

/// Rows a page key scrolls.
const PAGE: isize = 20;

/// What a key asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Quit,
    Window(&'static str),
    Sort(isize),
    Reverse,
    DocumentOrder,
    Scroll(isize),
    Nothing,
}

fn action(key: KeyEvent) -> Action {
    if key.kind == KeyEventKind::Release {
        return Action::Nothing;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    match key.code {
        KeyCode::Char('c') if ctrl => Action::Quit,
        KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
        KeyCode::Char('1') => Action::Window("1s"),
        KeyCode::Char('5') => Action::Window("5s"),
        KeyCode::Char('6') => Action::Window("60s"),
        KeyCode::Char('c') => Action::Window("cumulative"),
        KeyCode::Right | KeyCode::Char('s') => Action::Sort(1),
        KeyCode::Left | KeyCode::Char('S') => Action::Sort(-1),
        KeyCode::Char('r') => Action::Reverse,
        KeyCode::Char('o') => Action::DocumentOrder,
        KeyCode::Down | KeyCode::Char('j') => Action::Scroll(1),
        KeyCode::Up | KeyCode::Char('k') => Action::Scroll(-1),
        KeyCode::PageDown => Action::Scroll(PAGE),
        KeyCode::PageUp => Action::Scroll(-PAGE),
        KeyCode::Home => Action::Scroll(isize::MIN / 2),
        _ => Action::Nothing,
    }
}

/// Runs the live view until a quit key; the terminal is restored however it ends.
pub fn run(options: &TopOptions) -> Result<(), String> {
    let mut terminal = ratatui::try_init().map_err(|e| {
        // Raw mode may be on already when the alternate screen is what failed.
        if ratatui::crossterm::terminal::is_raw_mode_enabled().unwrap_or(false) {
            let _ = ratatui::try_restore();
        }
        format!("cannot take over the terminal (is this a terminal?): {e}")
    })?;
    let outcome = run_in(&mut terminal, options);
    ratatui::restore();
    outcome
}

fn run_in(terminal: &mut DefaultTerminal, options: &TopOptions) -> Result<(), String> {
    let mut state = State::new(options.endpoint.stats_url(None), options.window.clone());
    state.poll_every = options.interval;
    let (ask, answers) = start_poller(options.clone());
    loop {
        while let Ok(outcome) = answers.try_recv() {
            state.apply(outcome, Instant::now());
        }
        terminal
            .draw(|frame| view::draw(frame, &state, Instant::now()))
            .map_err(|e| format!("cannot draw: {e}"))?;
        if !event::poll(TICK).map_err(|e| format!("cannot read keys: {e}"))? {
            continue;
        }
        let Event::Key(key) = event::read().map_err(|e| format!("cannot read keys: {e}"))? else {
            continue;
        };
        match action(key) {
            Action::Quit => return Ok(()),
            Action::Window(w) => {
                state.window = Some(w.to_owned());
                // The poller is gone only if it panicked; the next frame says nothing new.
                let _ = ask.send(w.to_owned());
            }
            Action::Sort(by) => state.sort_step(by),
            Action::Reverse => state.sort.descending = !state.sort.descending,
            Action::DocumentOrder => state.sort.column = None,
            Action::Scroll(by) => state.scroll_by(by),
            Action::Nothing => {}
        }
    }
}

/// Starts the poller: it answers at once and then once per interval, and at once again when a
/// window is sent. It ends when the loop drops its sender.
fn start_poller(options: TopOptions) -> (Sender<String>, Receiver<Result<Vec<u8>, String>>) {
    let (ask, asked) = mpsc::channel::<String>();
    let (tell, answers) = mpsc::channel();
    std::thread::Builder::new()
        .name("laptime-top-poll".into())
        .spawn(move || poll(&options, &asked, &tell))
        .expect("spawn the poller thread");
    (ask, answers)
}

fn poll(options: &TopOptions, asked: &Receiver<String>, tell: &Sender<Result<Vec<u8>, String>>) {
    let mut window = options.window.clone();
    loop {
        let outcome = options
            .endpoint
            .get_stats(window.as_deref(), options.timeout);
        if tell.send(outcome).is_err() {
            return;
        }
        match asked.recv_timeout(options.interval) {
            Ok(w) => window = Some(w),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_quit_switch_windows_and_sort() {
        let key = |code, modifiers| action(KeyEvent::new(code, modifiers));
        let none = KeyModifiers::NONE;
        assert_eq!(key(KeyCode::Char('q'), none), Action::Quit);
        assert_eq!(key(KeyCode::Char('c'), KeyModifiers::CONTROL), Action::Quit);
        assert_eq!(key(KeyCode::Char('c'), none), Action::Window("cumulative"));
        assert_eq!(key(KeyCode::Char('6'), none), Action::Window("60s"));
        assert_eq!(key(KeyCode::Left, none), Action::Sort(-1));
        assert_eq!(key(KeyCode::PageDown, none), Action::Scroll(PAGE));
        assert_eq!(key(KeyCode::Char('x'), none), Action::Nothing);
    }
}
