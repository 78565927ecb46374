//! Typed records: every persisted value is a JSON envelope `{"format": N, "data": …}`.
//!
//! The format number lets a newer fogd read older records (and refuse newer ones it does not
//! understand) instead of misreading them.

use crate::{Precondition, Record, Store, StoreError, Write};
use serde::{de::DeserializeOwned, Serialize};

/// A type that is stored under a versioned envelope.
pub trait Persisted: Serialize + DeserializeOwned {
    /// Current format written by this build.
    const FORMAT: u32;
}

#[derive(serde::Serialize)]
struct EnvelopeOut<'a, T> {
    format: u32,
    data: &'a T,
}

#[derive(serde::Deserialize)]
struct EnvelopeIn<T> {
    format: u32,
    data: T,
}

/// A decoded value with the revision it was read at (for compare-and-swap).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub revision: u64,
}

/// Serialises `value` in its envelope.
pub fn encode<T: Persisted>(value: &T) -> Vec<u8> {
    serde_json::to_vec(&EnvelopeOut {
        format: T::FORMAT,
        data: value,
    })
    .unwrap_or_default()
}

/// Decodes a record, refusing formats newer than this build knows.
pub fn decode<T: Persisted>(record: &Record) -> Result<Versioned<T>, StoreError> {
    let env: EnvelopeIn<serde_json::Value> =
        serde_json::from_slice(&record.value).map_err(|e| StoreError::Decode {
            key: record.key.clone(),
            reason: e.to_string(),
        })?;
    if env.format > T::FORMAT {
        return Err(StoreError::Decode {
            key: record.key.clone(),
            reason: format!(
                "format {} is newer than the supported {}",
                env.format,
                T::FORMAT
            ),
        });
    }
    let value = serde_json::from_value(env.data).map_err(|e| StoreError::Decode {
        key: record.key.clone(),
        reason: e.to_string(),
    })?;
    Ok(Versioned {
        value,
        revision: record.revision,
    })
}

/// Reads and decodes one key.
pub async fn get<T: Persisted>(
    store: &dyn Store,
    key: &str,
) -> Result<Option<Versioned<T>>, StoreError> {
    store.get(key).await?.as_ref().map(decode).transpose()
}

/// Reads and decodes every key under `prefix`.
pub async fn list<T: Persisted>(
    store: &dyn Store,
    prefix: &str,
) -> Result<Vec<(String, Versioned<T>)>, StoreError> {
    store
        .range(prefix)
        .await?
        .iter()
        .map(|r| decode(r).map(|v| (r.key.clone(), v)))
        .collect()
}

/// A typed put for a batch.
pub fn put<T: Persisted>(key: impl Into<String>, value: &T, precondition: Precondition) -> Write {
    Write::put(key, encode(value), precondition)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SqliteStore;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Thing {
        n: u32,
    }
    impl Persisted for Thing {
        const FORMAT: u32 = 2;
    }

    #[tokio::test]
    async fn round_trip_and_format_gate() {
        let s = SqliteStore::in_memory().expect("open");
        s.commit(vec![put("t/1", &Thing { n: 7 }, Precondition::Absent)])
            .await
            .expect("put");
        let got: Versioned<Thing> = get(&s, "t/1").await.expect("get").expect("some");
        assert_eq!(got.value, Thing { n: 7 });
        s.commit(vec![Write::put(
            "t/2",
            br#"{"format":3,"data":{"n":1}}"#.to_vec(),
            Precondition::Any,
        )])
        .await
        .expect("put");
        assert!(matches!(
            get::<Thing>(&s, "t/2").await,
            Err(StoreError::Decode { .. })
        ));
        s.commit(vec![Write::put(
            "t/3",
            br#"{"format":1,"data":{"n":1}}"#.to_vec(),
            Precondition::Any,
        )])
        .await
        .expect("put");
        assert_eq!(
            get::<Thing>(&s, "t/3")
                .await
                .expect("older format reads")
                .map(|v| v.value),
            Some(Thing { n: 1 })
        );
    }
}
