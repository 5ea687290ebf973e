//! `pinch chat`'s live view on a terminal (issue 18, decision 0048): a
//! spinner naming what the agent does (`thinking`, `running web_fetch`)
//! with the seconds, drawn in place on stderr, and the reply printed as
//! the model writes it. Only on a TTY: piped output gets final replies
//! only, as before.

use std::io::Write;
use std::time::{Duration, Instant};

use pinch_channels::cli_socket::ServerMsg;

/// The terminal's "the agent is working" line: drawn in place on stderr,
/// erased before anything else is printed.
#[derive(Default)]
pub struct Spinner {
    frame: usize,
    shown: bool,
}

impl Spinner {
    const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

    pub fn draw(&mut self, state: &str, elapsed: Duration) {
        let c = Self::FRAMES[self.frame % Self::FRAMES.len()];
        self.frame += 1;
        eprint!("\r\x1b[2K{c} {state}… {}s", elapsed.as_secs());
        let _ = std::io::stderr().flush();
        self.shown = true;
    }

    pub fn clear(&mut self) {
        if std::mem::take(&mut self.shown) {
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
        }
    }
}

/// The reply being printed as it streams.
struct Draft {
    reply_to: Option<String>,
    /// What this model call has printed so far.
    text: String,
}

/// What the terminal shows while the agent works.
#[derive(Default)]
pub struct LiveView {
    /// Streamed text and the spinner are shown (a TTY).
    pub tty: bool,
    spinner: Spinner,
    /// Since when the agent works on a line (accepted, not yet settled).
    pub working: Option<Instant>,
    state: Option<String>,
    draft: Option<Draft>,
}

fn out(s: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(s.as_bytes());
    let _ = o.flush();
}

impl LiveView {
    pub fn new(tty: bool) -> LiveView {
        LiveView {
            tty,
            ..LiveView::default()
        }
    }

    /// Redraws the spinner (not while text streams: it would overwrite it).
    pub fn tick(&mut self) {
        if let (true, Some(t), None) = (self.tty, self.working, &self.draft) {
            let state = self.state.as_deref().unwrap_or("working");
            self.spinner.draw(state, t.elapsed());
        }
    }

    /// Erases the spinner before other output.
    pub fn clear(&mut self) {
        self.spinner.clear();
    }

    /// Takes a live message (`Working`, `Draft`, `Idle`); false for others.
    pub fn take(&mut self, m: &ServerMsg) -> bool {
        match m {
            ServerMsg::Working { state, .. } => {
                self.state = Some(state.clone());
                self.working.get_or_insert_with(Instant::now);
            }
            ServerMsg::Draft { reply_to, at, text } if self.tty => {
                self.spinner.clear();
                match &mut self.draft {
                    Some(d) if d.reply_to == *reply_to && *at == d.text.len() => {
                        out(text);
                        d.text.push_str(text);
                    }
                    // The model's next step: its text on a new line.
                    Some(d) if d.reply_to == *reply_to && *at == 0 => {
                        out("\n");
                        out(text);
                        d.text = text.clone();
                    }
                    None if *at == 0 => {
                        out(text);
                        self.draft = Some(Draft {
                            reply_to: reply_to.clone(),
                            text: text.clone(),
                        });
                    }
                    _ => {}
                }
            }
            ServerMsg::Draft { .. } => {}
            ServerMsg::Idle { reply_to } => {
                self.state = None;
                if self.draft.as_ref().is_some_and(|d| d.reply_to == *reply_to) {
                    self.draft = None;
                    out("\n");
                    eprintln!("(that reply was cut off; the agent tries again or says why)");
                }
            }
            _ => return false,
        }
        true
    }

    /// A reply arrives: what is left to print of it, the streamed draft
    /// having shown the rest (all of it, when the draft was something
    /// else).
    pub fn reply<'a>(&mut self, in_reply_to: Option<&str>, text: &'a str) -> &'a str {
        let Some(d) = self.draft.take() else {
            return text;
        };
        if d.reply_to.as_deref() == in_reply_to {
            if let Some(rest) = text.strip_prefix(d.text.as_str()) {
                return rest;
            }
        }
        out("\n");
        text
    }

    /// The agent's work on the lines so far is over.
    pub fn settled(&mut self) {
        self.working = None;
        self.state = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(at: usize, text: &str) -> ServerMsg {
        ServerMsg::Draft {
            reply_to: Some("m1".into()),
            at,
            text: text.into(),
        }
    }

    #[test]
    fn a_streamed_reply_is_not_printed_twice() {
        let mut v = LiveView::new(true);
        assert!(v.take(&draft(0, "Hello ")));
        assert!(v.take(&draft(6, "world")));
        // The final reply: only what the draft did not show.
        assert_eq!(v.reply(Some("m1"), "Hello world"), "");
        assert!(v.draft.is_none());
        // A reply with more than the draft (buttons listed after it).
        v.take(&draft(0, "Pick"));
        assert_eq!(v.reply(Some("m1"), "Pick\n  [1] yes"), "\n  [1] yes");
        // A reply that differs is printed whole.
        v.take(&draft(0, "Draft text"));
        assert_eq!(v.reply(Some("m1"), "Other"), "Other");
    }

    #[test]
    fn pieces_out_of_place_are_skipped_and_piped_output_streams_nothing() {
        let mut v = LiveView::new(true);
        v.take(&draft(0, "ab"));
        v.take(&draft(7, "zz"));
        assert_eq!(v.draft.as_ref().unwrap().text, "ab");
        let mut piped = LiveView::new(false);
        assert!(piped.take(&draft(0, "ab")), "taken, not shown");
        assert!(piped.draft.is_none());
        assert_eq!(piped.reply(Some("m1"), "ab"), "ab");
    }

    #[test]
    fn working_names_the_state_until_settled() {
        let mut v = LiveView::new(false);
        v.take(&ServerMsg::Working {
            reply_to: None,
            state: "running web_fetch".into(),
            since_ms: 0,
        });
        assert_eq!(v.state.as_deref(), Some("running web_fetch"));
        assert!(v.working.is_some());
        v.settled();
        assert!(v.working.is_none() && v.state.is_none());
        assert!(!v.take(&ServerMsg::Notice { text: "x".into() }));
    }
}
