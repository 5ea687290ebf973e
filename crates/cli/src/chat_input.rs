//! `pinch chat`'s input: lines from stdin or a terminal, with invalid UTF-8
//! replaced (said once) and read errors retried a little, then reported.

use std::io::BufRead;
use std::time::Duration;

/// Input lines, with invalid UTF-8 replaced (said once) and read errors
/// retried a little, then reported — never taken for the end of input.
pub struct Lines<R> {
    r: R,
    n: usize,
    warned: bool,
}

impl<R: BufRead> Lines<R> {
    pub fn new(r: R) -> Lines<R> {
        Lines {
            r,
            n: 0,
            warned: false,
        }
    }

    /// The next line (1-based number, text without its line end); `None`
    /// at the end of input.
    pub fn next_line(&mut self) -> std::io::Result<Option<(usize, String)>> {
        let mut buf = Vec::new();
        let mut errors = 0;
        loop {
            match self.r.read_until(b'\n', &mut buf) {
                Ok(0) if buf.is_empty() => return Ok(None),
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    errors += 1;
                    if errors >= 3 {
                        return Err(e);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        self.n += 1;
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        let text = match String::from_utf8(buf) {
            Ok(t) => t,
            Err(e) => {
                if !self.warned {
                    self.warned = true;
                    eprintln!(
                        "pinch: line {} is not valid UTF-8: its invalid bytes were replaced with U+FFFD (�) and it was sent that way (later lines like it are not reported)",
                        self.n
                    );
                }
                String::from_utf8_lossy(e.as_bytes()).into_owned()
            }
        };
        Ok(Some((self.n, text)))
    }
}

/// Reads all of `r` (piped input). A read error ends it early: the lines
/// before it are returned with the error.
pub fn read_all(r: impl BufRead) -> (Vec<String>, Option<String>) {
    let mut lines = Lines::new(r);
    let mut v = Vec::new();
    loop {
        match lines.next_line() {
            Ok(Some((_, t))) => v.push(t),
            Ok(None) => return (v, None),
            Err(e) => {
                return (
                    v,
                    Some(format!("reading stdin failed after line {}: {e}", lines.n)),
                )
            }
        }
    }
}
