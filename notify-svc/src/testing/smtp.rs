//! A small SMTP receiver: speaks enough of RFC 5321 for a client to deliver (EHLO, MAIL, RCPT,
//! DATA, RSET, NOOP, QUIT), records each message, and can be told to refuse recipients
//! permanently (5xx) or for now (4xx).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One message as the receiver got it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The message as sent after DATA (headers and body), dot-unstuffed.
    pub data: String,
    /// When the receiver took it (the end of DATA).
    pub at: std::time::Instant,
}

impl Received {
    /// The value of the first header `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            match (&mut value, line.starts_with([' ', '\t'])) {
                (Some(v), true) => v.push_str(line.trim_start()),
                (Some(_), false) => break,
                (None, false) => {
                    if let Some((n, v)) = line.split_once(':') {
                        if n.eq_ignore_ascii_case(name) {
                            value = Some(v.trim().to_owned());
                        }
                    }
                }
                (None, true) => {}
            }
        }
        value
    }
}

/// How the receiver answers RCPT TO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Accept,
    /// `550`: the mailbox does not exist.
    Refuse,
    /// `451`: try again later.
    Defer,
}

#[derive(Clone)]
pub struct SmtpReceiver {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    answer: Arc<Mutex<Answer>>,
}

impl SmtpReceiver {
    /// Listens on 127.0.0.1, port 0, until the runtime ends.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("an address")).await.expect("bind")
    }

    /// Listens on `addr` until the runtime ends.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let receiver = Self {
            addr: listener.local_addr().expect("address"),
            received: Arc::default(),
            answer: Arc::new(Mutex::new(Answer::Accept)),
        };
        let shared = receiver.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let session = shared.clone();
                tokio::spawn(async move {
                    let _ = session.serve(stream).await;
                });
            }
        });
        Ok(receiver)
    }

    /// `smtp://127.0.0.1:<port>`, for a relay URL.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    pub fn answer(&self, answer: Answer) {
        *self.answer.lock().expect("lock") = answer;
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// How many messages it has taken so far.
    pub fn count(&self) -> usize {
        self.received.lock().expect("lock").len()
    }

    async fn serve(&self, stream: tokio::net::TcpStream) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read);
        write.write_all(b"220 receiver.test ESMTP\r\n").await?;
        let mut current = Received {
            mail_from: String::new(),
            rcpt_to: Vec::new(),
            data: String::new(),
            at: std::time::Instant::now(),
        };
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let command = line.trim_end().to_owned();
            let verb = command.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
            let reply: &[u8] = match verb.as_str() {
                "EHLO" | "HELO" => b"250-receiver.test\r\n250 8BITMIME\r\n",
                "MAIL" => {
                    current = Received {
                        mail_from: address_in(&command),
                        rcpt_to: Vec::new(),
                        data: String::new(),
                        at: std::time::Instant::now(),
                    };
                    b"250 OK\r\n"
                }
                "RCPT" => match *self.answer.lock().expect("lock") {
                    Answer::Accept => {
                        current.rcpt_to.push(address_in(&command));
                        b"250 OK\r\n"
                    }
                    Answer::Refuse => b"550 5.1.1 no such mailbox\r\n",
                    Answer::Defer => b"451 4.3.0 try again later\r\n",
                },
                "DATA" => {
                    write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                    let mut data = String::new();
                    loop {
                        line.clear();
                        if lines.read_line(&mut line).await? == 0 {
                            return Ok(());
                        }
                        if line == ".\r\n" {
                            break;
                        }
                        data.push_str(line.strip_prefix('.').unwrap_or(&line));
                    }
                    current.data = data;
                    current.at = std::time::Instant::now();
                    self.received.lock().expect("lock").push(current.clone());
                    b"250 OK queued\r\n"
                }
                "RSET" | "NOOP" => b"250 OK\r\n",
                "QUIT" => {
                    write.write_all(b"221 bye\r\n").await?;
                    return Ok(());
                }
                _ => b"502 command not implemented\r\n",
            };
            write.write_all(reply).await?;
        }
    }
}

/// `x@y` in `MAIL FROM:<x@y>` or `RCPT TO:<x@y>`.
fn address_in(command: &str) -> String {
    let start = command.find('<').map_or(0, |i| i + 1);
    let end = command.rfind('>').unwrap_or(command.len());
    command.get(start..end).unwrap_or_default().to_owned()
}
