//! `xapsd pass`: turns an Apple ID password into the hash the config holds.
//!
//! Apple's certificate service takes the lower-case hex SHA-256 of the
//! password, so the config never needs the password itself
//! (`apple_id_hashed_password`). The password is read without echo from a
//! terminal, or as one line of stdin when piped (scripts, tests); it is
//! never printed, logged or kept after hashing.

use std::io::{BufRead, Write};
use std::os::fd::AsFd;

use nix::sys::termios::{self, LocalFlags, SetArg, Termios};

/// The lower-case hex SHA-256 of `password`'s UTF-8 bytes.
pub fn hash(password: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, password.as_bytes());
    data_encoding::HEXLOWER.encode(digest.as_ref())
}

/// Puts the terminal's echo back when dropped, even on an error path.
struct EchoOff<F: AsFd> {
    fd: F,
    saved: Termios,
}

impl<F: AsFd> EchoOff<F> {
    fn new(fd: F) -> nix::Result<EchoOff<F>> {
        let saved = termios::tcgetattr(fd.as_fd())?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        // Keep the newline echoed so the cursor moves on after Enter.
        quiet.local_flags.insert(LocalFlags::ECHONL);
        termios::tcsetattr(fd.as_fd(), SetArg::TCSAFLUSH, &quiet)?;
        Ok(EchoOff { fd, saved })
    }
}

impl<F: AsFd> Drop for EchoOff<F> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd.as_fd(), SetArg::TCSAFLUSH, &self.saved);
    }
}

/// One line from `input` without its line ending.
fn read_line(input: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    input.read_line(&mut line)?;
    if line.ends_with('\n') {
        line.pop();
        if line.ends_with('\r') {
            line.pop();
        }
    }
    Ok(line)
}

/// Overwrites the password's bytes before they are freed (best effort).
fn wipe(secret: String) {
    let mut bytes = secret.into_bytes();
    bytes.fill(0);
    std::hint::black_box(&bytes);
}

/// Runs `xapsd pass`; returns the exit code.
pub fn main() -> i32 {
    let stdin = std::io::stdin();
    let on_terminal = nix::unistd::isatty(stdin.as_fd()).unwrap_or(false);
    let read = if on_terminal {
        eprint!("Apple ID password (not shown): ");
        let _ = std::io::stderr().flush();
        match EchoOff::new(stdin.as_fd()) {
            Ok(_guard) => read_line(&mut stdin.lock()),
            Err(e) => {
                eprintln!(
                    "xapsd: cannot turn off terminal echo ({e}); refusing to read the password"
                );
                return 1;
            }
        }
    } else {
        read_line(&mut stdin.lock())
    };
    let password = match read {
        Ok(p) => p,
        Err(e) => {
            eprintln!("xapsd: cannot read the password: {e}");
            return 1;
        }
    };
    if password.is_empty() {
        wipe(password);
        eprintln!("xapsd: no password given");
        return 1;
    }
    let hashed = hash(&password);
    wipe(password);
    println!("{hashed}");
    if on_terminal {
        eprintln!("put it in the config as \"apple_id_hashed_password\", beside \"apple_id\"");
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_lower_case_hex_sha256() {
        // printf 'abc' | sha256sum
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn reads_one_line_without_its_ending() {
        let mut input = &b"p\xc3\xa4ss word\r\nnext\n"[..];
        assert_eq!(read_line(&mut input).unwrap(), "päss word");
        let mut last = &b"no newline"[..];
        assert_eq!(read_line(&mut last).unwrap(), "no newline");
    }
}
