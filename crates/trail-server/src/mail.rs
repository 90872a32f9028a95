//! Invitation emails over SMTP (RFC 5321): a plain relay conversation — EHLO, MAIL FROM, RCPT TO,
//! DATA, QUIT — to the configured host, typically a local MTA that handles TLS and delivery onward.
//! Sending happens after the invitation is stored and never fails the request: the admin always gets
//! the link in the answer, and a failed send is logged for the operator.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::settings::SmtpSettings;

/// A message to send.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("cannot talk to the SMTP server: {0}")]
    Io(#[from] std::io::Error),
    #[error("the SMTP server answered {0}")]
    Refused(String),
    #[error("the SMTP server did not answer in time")]
    Timeout,
    #[error("address {0:?} cannot be used in SMTP")]
    BadAddress(String),
}

fn clean_address(a: &str) -> Result<&str, MailError> {
    if a.is_empty() || a.chars().any(|c| c.is_control() || c == '<' || c == '>' || c.is_whitespace()) {
        return Err(MailError::BadAddress(a.to_string()));
    }
    Ok(a)
}

/// Sends one message; the whole conversation is bounded by a timeout.
pub async fn send(smtp: &SmtpSettings, mail: &Mail) -> Result<(), MailError> {
    tokio::time::timeout(Duration::from_secs(30), conversation(smtp, mail))
        .await
        .map_err(|_| MailError::Timeout)?
}

async fn conversation(smtp: &SmtpSettings, mail: &Mail) -> Result<(), MailError> {
    let (from, to) = (clean_address(&smtp.from)?, clean_address(&mail.to)?);
    let stream = TcpStream::connect((smtp.host.as_str(), smtp.port)).await?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    expect(&mut read, 220).await?;
    for (command, code) in [
        ("EHLO trail".to_string(), 250),
        (format!("MAIL FROM:<{from}>"), 250),
        (format!("RCPT TO:<{to}>"), 250),
        ("DATA".to_string(), 354),
    ] {
        write.write_all(format!("{command}\r\n").as_bytes()).await?;
        expect(&mut read, code).await?;
    }
    // Header values come from Trail, but the subject could carry an org name: keep it on one line.
    let subject: String = mail.subject.chars().filter(|c| !c.is_control()).collect();
    let mut data = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    );
    for line in mail.body.lines() {
        // Dot-stuffing (RFC 5321 §4.5.2).
        if line.starts_with('.') {
            data.push('.');
        }
        data.push_str(line);
        data.push_str("\r\n");
    }
    data.push_str(".\r\n");
    write.write_all(data.as_bytes()).await?;
    expect(&mut read, 250).await?;
    write.write_all(b"QUIT\r\n").await?;
    let _ = expect(&mut read, 221).await;
    Ok(())
}

/// Reads one (possibly multi-line) reply and checks its code.
async fn expect(read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>, code: u16) -> Result<(), MailError> {
    loop {
        let mut line = String::new();
        if read.read_line(&mut line).await? == 0 {
            return Err(MailError::Refused("nothing (connection closed)".into()));
        }
        let got: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        if got != code {
            return Err(MailError::Refused(line.trim_end().to_string()));
        }
        // "250-…" continues, "250 …" ends the reply.
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(());
        }
    }
}
