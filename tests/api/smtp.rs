//! A small SMTP server speaking the real protocol over TCP on loopback, for
//! the email tests: it records every message it accepts, and can be told
//! to refuse mail permanently (5xx) or to answer scripted replies (e.g.
//! `451` twice, then the usual `250`) at any stage of a session.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub from: String,
    pub to: Vec<String>,
    pub data: Vec<u8>,
}

impl ReceivedMail {
    pub fn parsed(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default()
            .parse(&self.data)
            .expect("a parseable message")
    }

    pub fn subject(&self) -> String {
        self.parsed().subject().unwrap_or_default().to_owned()
    }

    pub fn text(&self) -> String {
        self.parsed()
            .body_text(0)
            .map(|t| t.into_owned())
            .unwrap_or_default()
    }

    pub fn html(&self) -> String {
        self.parsed()
            .body_html(0)
            .map(|t| t.into_owned())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Accept,
    /// 550 to MAIL FROM.
    RejectPermanently,
}

/// Where in a session a scripted reply is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Instead of the `220` greeting; the server then hangs up.
    Greeting,
    MailFrom,
    RcptTo,
    /// The reply to the `DATA` command itself.
    Data,
    /// The reply after the message's final dot; the message is dropped.
    EndOfData,
}

#[derive(Clone)]
pub struct SmtpServer {
    pub addr: SocketAddr,
    mails: Arc<Mutex<Vec<ReceivedMail>>>,
    mode: Arc<Mutex<Mode>>,
    /// Refusals still to give, per stage, in order.
    script: Arc<Mutex<HashMap<Stage, VecDeque<String>>>>,
    /// Sessions greeted so far (with `220` or a refusal).
    sessions: Arc<AtomicUsize>,
}

impl SmtpServer {
    pub async fn start() -> SmtpServer {
        Self::serve(TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    pub async fn start_on(addr: SocketAddr) -> SmtpServer {
        Self::serve(TcpListener::bind(addr).await.expect("port is free again"))
    }

    fn serve(listener: TcpListener) -> SmtpServer {
        let server = SmtpServer {
            addr: listener.local_addr().unwrap(),
            mails: Arc::default(),
            mode: Arc::new(Mutex::new(Mode::Accept)),
            script: Arc::default(),
            sessions: Arc::default(),
        };
        let state = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let _ = state.session(stream).await;
                });
            }
        });
        server
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Refuses the next commands of `stage` with these replies (a 4xx or
    /// 5xx reply line each, e.g. `451 4.3.0 try later`), one per command,
    /// across sessions; after them the stage is served as usual.
    pub fn script(&self, stage: Stage, replies: &[&str]) {
        let mut script = self.script.lock().unwrap();
        let queue = script.entry(stage).or_default();
        queue.extend(replies.iter().map(|r| format!("{r}\r\n")));
    }

    /// The next scripted refusal for `stage`, if any is left.
    fn refusal(&self, stage: Stage) -> Option<String> {
        self.script.lock().unwrap().get_mut(&stage)?.pop_front()
    }

    /// How many sessions were greeted (or refused at the greeting).
    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::SeqCst)
    }

    pub fn mails(&self) -> Vec<ReceivedMail> {
        self.mails.lock().unwrap().clone()
    }

    /// `[smtp]` for this server, mailing as herald@example.com.
    pub fn config(&self, extra: &str) -> String {
        smtp_config(self.addr, extra)
    }

    async fn session(&self, stream: TcpStream) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read);
        let refusal = self.refusal(Stage::Greeting);
        self.sessions.fetch_add(1, Ordering::SeqCst);
        if let Some(refusal) = refusal {
            return write.write_all(refusal.as_bytes()).await;
        }
        write.write_all(b"220 test.local ESMTP\r\n").await?;
        let (mut from, mut to) = (String::new(), Vec::new());
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let command = line.trim_end().to_owned();
            let upper = command.to_ascii_uppercase();
            let reply: String = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                "250-test.local\r\n250 8BITMIME\r\n".to_owned()
            } else if upper.starts_with("MAIL FROM:") {
                if *self.mode.lock().unwrap() == Mode::RejectPermanently {
                    "550 5.7.1 sender rejected\r\n".to_owned()
                } else if let Some(refusal) = self.refusal(Stage::MailFrom) {
                    refusal
                } else {
                    from = command[10..].trim().to_owned();
                    to.clear();
                    "250 2.1.0 OK\r\n".to_owned()
                }
            } else if upper.starts_with("RCPT TO:") {
                self.refusal(Stage::RcptTo).unwrap_or_else(|| {
                    to.push(command[8..].trim().trim_matches(['<', '>']).to_owned());
                    "250 2.1.5 OK\r\n".to_owned()
                })
            } else if upper == "DATA" {
                match self.refusal(Stage::Data) {
                    Some(refusal) => refusal,
                    None => self.receive(&mut lines, &mut write, &from, &to).await?,
                }
            } else if upper == "QUIT" {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            } else if upper == "RSET" || upper == "NOOP" {
                "250 2.0.0 OK\r\n".to_owned()
            } else {
                "502 5.5.2 unknown command\r\n".to_owned()
            };
            write.write_all(reply.as_bytes()).await?;
        }
    }

    /// Takes the message after `DATA`; returns the reply to its final dot.
    async fn receive(
        &self,
        lines: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
        write: &mut tokio::net::tcp::OwnedWriteHalf,
        from: &str,
        to: &[String],
    ) -> std::io::Result<String> {
        write.write_all(b"354 end with .\r\n").await?;
        let data = read_data(lines).await?;
        if let Some(refusal) = self.refusal(Stage::EndOfData) {
            return Ok(refusal);
        }
        self.mails.lock().unwrap().push(ReceivedMail {
            from: from.to_owned(),
            to: to.to_vec(),
            data,
        });
        Ok("250 2.0.0 queued\r\n".to_owned())
    }
}

/// `[smtp]` for a server on `addr` (one that may not be listening yet),
/// mailing as herald@example.com; `extra` follows it.
pub fn smtp_config(addr: SocketAddr, extra: &str) -> String {
    format!(
        "[smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"herald@example.com\"\ntimeout = \"5s\"\n{extra}\n",
        addr.port()
    )
}

/// Reads the message up to the lone dot, undoing dot-stuffing.
async fn read_data(
    lines: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 || line == ".\r\n" {
            return Ok(data);
        }
        let unstuffed = line.strip_prefix('.').unwrap_or(&line);
        data.extend_from_slice(unstuffed.as_bytes());
    }
}
