//! A scripted SMTP server for the status page tests: it refuses mail to `delete@...` for good
//! (550), asks to try later for everything else (451), and accepts everything once told to.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The server's port and switches.
pub struct FakeSmtp {
    /// The loopback port it listens on.
    pub port: u16,
    accept: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
}

impl FakeSmtp {
    /// Listens on a free loopback port; each connection is served on its own thread.
    pub fn start() -> FakeSmtp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind SMTP port");
        let port = listener.local_addr().expect("address").port();
        let accept = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (a, n) = (accept.clone(), accepted.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (a, n) = (a.clone(), n.clone());
                std::thread::spawn(move || serve(stream, &a, &n));
            }
        });
        FakeSmtp {
            port,
            accept,
            accepted,
        }
    }

    /// From now on, every recipient is accepted.
    pub fn accept_all(&self) {
        self.accept.store(true, Ordering::SeqCst);
    }

    /// Mails accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn serve(stream: TcpStream, accept: &AtomicBool, accepted: &AtomicUsize) {
    let Ok(read) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read);
    let mut out = stream;
    let mut say = |text: &str| out.write_all(text.as_bytes()).is_ok();
    if !say("220 fake.test ESMTP\r\n") {
        return;
    }
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let upper = line.trim_end().to_ascii_uppercase();
        let answer = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            "250 fake.test\r\n"
        } else if upper.starts_with("RCPT") {
            if accept.load(Ordering::SeqCst) {
                "250 2.1.5 ok\r\n"
            } else if upper.contains("<DELETE@") {
                "550 5.7.1 deletions are not accepted here\r\n"
            } else {
                "451 4.3.2 mailbox busy, try again later\r\n"
            }
        } else if upper == "DATA" {
            if !say("354 go ahead\r\n") {
                return;
            }
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if line.trim_end() == "." {
                    break;
                }
            }
            accepted.fetch_add(1, Ordering::SeqCst);
            "250 2.0.0 queued\r\n"
        } else if upper == "QUIT" {
            let _ = say("221 bye\r\n");
            return;
        } else if upper.starts_with("MAIL") || upper == "RSET" || upper == "NOOP" {
            "250 ok\r\n"
        } else {
            "502 not implemented\r\n"
        };
        if !say(answer) {
            return;
        }
    }
}
