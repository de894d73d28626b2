//! A small SMTP server speaking the real protocol over TCP on loopback, for
//! the email tests: it records every message and can be told to refuse
//! mail permanently (5xx) or for now (4xx).

use std::net::SocketAddr;
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

#[derive(Clone)]
pub struct SmtpServer {
    pub addr: SocketAddr,
    mails: Arc<Mutex<Vec<ReceivedMail>>>,
    mode: Arc<Mutex<Mode>>,
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

    pub fn mails(&self) -> Vec<ReceivedMail> {
        self.mails.lock().unwrap().clone()
    }

    /// `[smtp]` for this server, mailing as herald@example.com.
    pub fn config(&self, extra: &str) -> String {
        format!(
            "[smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"herald@example.com\"\ntimeout = \"5s\"\n{extra}\n",
            self.addr.port()
        )
    }

    async fn session(&self, stream: TcpStream) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read);
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
            let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                b"250-test.local\r\n250 8BITMIME\r\n"
            } else if upper.starts_with("MAIL FROM:") {
                if *self.mode.lock().unwrap() == Mode::RejectPermanently {
                    b"550 5.7.1 sender rejected\r\n"
                } else {
                    from = command[10..].trim().to_owned();
                    to.clear();
                    b"250 2.1.0 OK\r\n"
                }
            } else if upper.starts_with("RCPT TO:") {
                to.push(command[8..].trim().trim_matches(['<', '>']).to_owned());
                b"250 2.1.5 OK\r\n"
            } else if upper == "DATA" {
                write.write_all(b"354 end with .\r\n").await?;
                let data = read_data(&mut lines).await?;
                self.mails.lock().unwrap().push(ReceivedMail {
                    from: from.clone(),
                    to: to.clone(),
                    data,
                });
                b"250 2.0.0 queued\r\n"
            } else if upper == "QUIT" {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            } else if upper == "RSET" || upper == "NOOP" {
                b"250 2.0.0 OK\r\n"
            } else {
                b"502 5.5.2 unknown command\r\n"
            };
            write.write_all(reply).await?;
        }
    }
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
