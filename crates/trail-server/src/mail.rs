//! Email over SMTP with lettre: a local relay in the clear (`smtp.tls = "none"`), STARTTLS required
//! (`starttls`: no credentials or mail before the upgrade) or implicit TLS (`tls`), with AUTH when a
//! username is set, certificates verified against the system's roots plus `smtp.ca_file`.
//! Invitation mail is sent after the invitation is stored and never fails the request: the admin
//! always gets the link in the answer, and a failed send is logged for the operator.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

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
    #[error("{0}")]
    Setup(String),
    #[error("address {0:?} cannot be used in SMTP")]
    BadAddress(String),
    #[error("the SMTP server: {0}")]
    Smtp(String),
}

/// Whether an address can be mailed: `local@domain`, at most 254 bytes, nothing SMTP would choke on.
/// (A bare domain such as `localhost` is allowed: the first user is `admin@localhost`.)
pub fn valid_address(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else { return false };
    !local.is_empty()
        && !domain.is_empty()
        && e.len() <= 254
        && !e.chars().any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
}

/// What went wrong in words, with the causes lettre nests (TLS problems are a level down).
pub fn describe(e: &lettre::transport::smtp::Error) -> String {
    format!("{e}{}", crate::error::causes(std::error::Error::source(e)))
}

/// The transport the settings describe.
pub fn transport(smtp: &SmtpSettings) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.as_str())
        .port(smtp.port)
        .timeout(Some(Duration::from_secs(30)));
    if smtp.tls != "none" {
        let mut params = TlsParameters::builder(smtp.host.clone());
        if !smtp.ca_file.is_empty() {
            let pem =
                std::fs::read(&smtp.ca_file).map_err(|e| format!("smtp.ca_file {}: {e}", smtp.ca_file))?;
            let ca =
                Certificate::from_pem(&pem).map_err(|e| format!("smtp.ca_file {}: {e}", smtp.ca_file))?;
            params = params.add_root_certificate(ca);
        }
        let params = params.build_rustls().map_err(|e| format!("smtp TLS: {e}"))?;
        b = b.tls(if smtp.tls == "tls" { Tls::Wrapper(params) } else { Tls::Required(params) });
    }
    if !smtp.username.is_empty() {
        b = b.credentials(Credentials::new(smtp.username.clone(), smtp.password.clone()));
    }
    Ok(b.build())
}

/// Sends one plain-text message.
pub async fn send(smtp: &SmtpSettings, mail: &Mail) -> Result<(), MailError> {
    let address = |a: &str| a.parse().map_err(|_| MailError::BadAddress(a.to_string()));
    // The subject could carry an org name: keep it on one line.
    let subject: String = mail.subject.chars().filter(|c| !c.is_control()).collect();
    let msg = Message::builder()
        .from(address(&smtp.from)?)
        .to(address(&mail.to)?)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(mail.body.clone())
        .map_err(|e| MailError::Setup(e.to_string()))?;
    let transport = transport(smtp).map_err(MailError::Setup)?;
    transport.send(msg).await.map(|_| ()).map_err(|e| MailError::Smtp(describe(&e)))
}
