//! Sending mail over SMTP with lettre (async, tokio, rustls).

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{SmtpSettings, SmtpTls};
use crate::core::email::Mail;

#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    host: String,
}

/// Where a mail sits in its group's thread: its own Message-ID, and the
/// Message-ID of the group's first mail it answers (none for the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Threading {
    pub message_id: String,
    pub answers: Option<String>,
}

/// Why a mail did not go out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailError {
    /// Worth retrying: no connection, a timeout, a 4xx reply.
    pub transient: bool,
    /// The SMTP reply code, when the server gave one.
    pub code: Option<u16>,
    pub message: String,
}

impl Mailer {
    pub fn new(settings: &SmtpSettings) -> Result<Self, String> {
        let builder = match settings.tls {
            SmtpTls::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            }
            SmtpTls::StartTls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.host)
                    .map_err(|e| format!("smtp.host: {e}"))?
            }
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host)
                .map_err(|e| format!("smtp.host: {e}"))?,
        };
        let mut builder = builder.port(settings.port).timeout(Some(settings.timeout));
        if let Some((user, password)) = &settings.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.0.clone()));
        }
        let from = settings
            .from
            .parse()
            .map_err(|e| format!("smtp.from: {e}"))?;
        Ok(Self {
            transport: builder.build(),
            from,
            host: format!("{}:{}", settings.host, settings.port),
        })
    }

    /// Checks that the server answers; a failure is a warning at start,
    /// never fatal (mail waits in the outbox until the server is back).
    pub async fn check(&self) {
        match self.transport.test_connection().await {
            Ok(true) => tracing::info!(smtp = %self.host, "SMTP server reachable"),
            Ok(false) | Err(_) => {
                tracing::warn!(smtp = %self.host, "SMTP server not reachable now; mail will wait in the outbox and be retried")
            }
        }
    }

    /// A new Message-ID in the sender's domain, unique without any
    /// coordination between replicas (a UUIDv7).
    pub fn new_message_id(&self) -> String {
        format!("<{}@{}>", uuid::Uuid::now_v7(), self.from.email.domain())
    }

    pub async fn send(
        &self,
        to: &[String],
        mail: &Mail,
        thread: &Threading,
        timeout: Duration,
    ) -> Result<(), MailError> {
        let message = self.message(to, mail, thread)?;
        match tokio::time::timeout(timeout, self.transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(MailError {
                transient: !e.is_permanent(),
                code: e.status().map(u16::from),
                message: e.to_string(),
            }),
            Err(_) => Err(MailError {
                transient: true,
                code: None,
                message: format!("no answer from {} within {timeout:?}", self.host),
            }),
        }
    }

    fn message(
        &self,
        to: &[String],
        mail: &Mail,
        thread: &Threading,
    ) -> Result<Message, MailError> {
        let permanent = |message: String| MailError {
            transient: false,
            code: None,
            message,
        };
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(mail.subject.clone())
            .date_now()
            .message_id(Some(thread.message_id.clone()));
        if let Some(first) = &thread.answers {
            builder = builder.in_reply_to(first.clone()).references(first.clone());
        }
        for address in to {
            let mailbox: Mailbox = address
                .parse()
                .map_err(|e| permanent(format!("recipient `{address}`: {e}")))?;
            builder = builder.to(mailbox);
        }
        let body = MultiPart::alternative()
            .singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(mail.text.clone()),
            )
            .singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_HTML)
                    .body(mail.html.clone()),
            );
        builder
            .multipart(body)
            .map_err(|e| permanent(format!("building the message: {e}")))
    }
}
