//! `pinch chat`'s working indicator (issue 18): a spinner with the
//! seconds, drawn in place on stderr while the agent works on a line.

use std::io::Write;
use std::time::Duration;

/// The terminal's "the agent is working" line: drawn in place on stderr,
/// erased before anything else is printed.
#[derive(Default)]
pub struct Spinner {
    frame: usize,
    shown: bool,
}

impl Spinner {
    const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

    pub fn draw(&mut self, elapsed: Duration) {
        let c = Self::FRAMES[self.frame % Self::FRAMES.len()];
        self.frame += 1;
        eprint!("\r\x1b[2K{c} working… {}s", elapsed.as_secs());
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
