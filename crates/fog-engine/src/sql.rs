//! SQL connections to managed servers and quoting helpers.

use crate::{EngineError, ServerSpec, SUPERUSER};
use std::time::Duration;
use tokio_postgres::{Client, NoTls};

/// Opens a connection as the internal superuser; the connection task runs in the background.
pub async fn connect(spec: &ServerSpec, dbname: &str) -> Result<Client, EngineError> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&spec.host)
        .port(spec.port)
        .user(SUPERUSER)
        .password(&spec.superuser_password)
        .dbname(dbname)
        .application_name("fogd")
        .connect_timeout(Duration::from_secs(5));
    let (client, conn) = cfg.connect(NoTls).await.map_err(|e| err(spec, e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "management connection closed");
        }
    });
    Ok(client)
}

/// Whether the server accepts connections: it completed a session, or answered with an
/// authentication failure (it is up; the password is another matter, for the caller).
/// "Starting up", "in recovery, not yet consistent" and refused connections are not ready.
pub async fn accepts_connections(spec: &ServerSpec) -> Result<(), EngineError> {
    match connect(spec, "postgres").await {
        Ok(c) => c
            .simple_query("SELECT 1")
            .await
            .map(|_| ())
            .map_err(|e| err(spec, e)),
        Err(EngineError::Sql { message, .. })
            if message.starts_with("28P01:") || message.starts_with("28000:") =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

pub fn err(spec: &ServerSpec, e: tokio_postgres::Error) -> EngineError {
    let message = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    };
    EngineError::Sql {
        uid: spec.uid.clone(),
        message,
    }
}

/// `"name"` with embedded quotes doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'value'` with embedded quotes doubled (standard_conforming_strings is on).
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(ident(r#"a"b"#), r#""a""b""#);
        assert_eq!(literal("it's"), "'it''s'");
    }
}
