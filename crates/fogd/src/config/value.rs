//! The types a setting can have, and how each is read from a flag (or environment
//! variable), read from the TOML file, shown in `--help` and written in the example file:
//! the [`Value`] trait. A setting's declaration names only its type; this module supplies
//! the rest.
//!
//! Durations are [`std::time::Duration`] written with a unit (`250ms`, `5s`, `1m30s`, `2h`);
//! a bare number is refused, except under a setting's former `…_ms` name, where it is a
//! number of milliseconds as it always was ([`parse_millis`]).

use clap::{builder::BoolishValueParser, Arg, ArgAction, ArgMatches};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// What fogd needs to know about a setting's type.
pub trait Value: Clone + std::fmt::Debug + PartialEq + Send + Sync + 'static {
    /// Gives the flag its parser and arity.
    fn flag(arg: Arg) -> Arg;
    /// The flag's (or environment variable's) value, if given. `id` was configured by
    /// [`Value::flag`].
    fn from_flag(m: &ArgMatches, id: &str) -> Option<Self>;
    /// The value of a key of the TOML file.
    fn from_toml(v: toml::Value) -> Result<Self, String>;
    /// The value as TOML; `None` when unset.
    fn to_toml(&self) -> Option<toml::Value>;
    /// The value as `--help` shows it; `None` when unset.
    fn show(&self) -> Option<String>;
    /// Makes a path read from the file at `base` relative to that file's directory.
    fn relative_to(&mut self, _base: &Path) {}
}

/// Deserializes a TOML value into `T` with serde, the error without the TOML excerpt (the
/// caller adds the key, the file and the line).
fn from_serde<T: for<'de> Deserialize<'de>>(v: toml::Value) -> Result<T, String> {
    T::deserialize(v).map_err(|e| e.message().to_string())
}

fn one<T: Clone + Send + Sync + 'static>(m: &ArgMatches, id: &str) -> Option<T> {
    m.get_one::<T>(id).cloned()
}

impl Value for PathBuf {
    fn flag(arg: Arg) -> Arg {
        arg.value_parser(clap::value_parser!(PathBuf))
    }
    fn from_flag(m: &ArgMatches, id: &str) -> Option<Self> {
        one(m, id)
    }
    fn from_toml(v: toml::Value) -> Result<Self, String> {
        from_serde(v)
    }
    fn to_toml(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.display().to_string()))
    }
    fn show(&self) -> Option<String> {
        Some(self.display().to_string())
    }
    fn relative_to(&mut self, base: &Path) {
        if self.is_relative() {
            *self = base.join(&*self);
        }
    }
}

/// Types read with `FromStr` from a flag, from a TOML string in the file, and shown with
/// `Display`.
macro_rules! string_value {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn flag(arg: Arg) -> Arg {
                arg.value_parser(|s: &str| s.parse::<$t>().map_err(|e| e.to_string()))
            }
            fn from_flag(m: &ArgMatches, id: &str) -> Option<Self> {
                one(m, id)
            }
            fn from_toml(v: toml::Value) -> Result<Self, String> {
                match v {
                    toml::Value::String(s) => s.parse::<$t>().map_err(|e| e.to_string()),
                    other => Err(format!("expected a string, found {}", other.type_str())),
                }
            }
            fn to_toml(&self) -> Option<toml::Value> {
                Some(toml::Value::String(self.to_string()))
            }
            fn show(&self) -> Option<String> {
                Some(self.to_string())
            }
        }
    )*};
}
string_value!(String, SocketAddr, PortRange, StoreSetting);

/// Integers: a TOML integer in the file.
macro_rules! integer_value {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn flag(arg: Arg) -> Arg {
                arg.value_parser(clap::value_parser!($t))
            }
            fn from_flag(m: &ArgMatches, id: &str) -> Option<Self> {
                one(m, id)
            }
            fn from_toml(v: toml::Value) -> Result<Self, String> {
                from_serde(v)
            }
            fn to_toml(&self) -> Option<toml::Value> {
                i64::try_from(*self).ok().map(toml::Value::Integer)
            }
            fn show(&self) -> Option<String> {
                Some(self.to_string())
            }
        }
    )*};
}
integer_value!(usize, i64);

/// `--flag` alone means true; `--flag=false` overrides a file that says true.
impl Value for bool {
    fn flag(arg: Arg) -> Arg {
        arg.num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true")
            .value_parser(BoolishValueParser::new())
    }
    fn from_flag(m: &ArgMatches, id: &str) -> Option<Self> {
        one(m, id)
    }
    fn from_toml(v: toml::Value) -> Result<Self, String> {
        from_serde(v)
    }
    fn to_toml(&self) -> Option<toml::Value> {
        Some(toml::Value::Boolean(*self))
    }
    fn show(&self) -> Option<String> {
        Some(self.to_string())
    }
}

/// A list: the flag is repeatable or comma-separated (so is the environment variable);
/// the file has a TOML array. A list replaces a list from a weaker source, never merges.
impl Value for Vec<String> {
    fn flag(arg: Arg) -> Arg {
        arg.action(ArgAction::Append)
            .value_delimiter(',')
            .value_parser(clap::value_parser!(String))
    }
    fn from_flag(m: &ArgMatches, id: &str) -> Option<Self> {
        m.get_many::<String>(id).map(|v| v.cloned().collect())
    }
    fn from_toml(v: toml::Value) -> Result<Self, String> {
        from_serde(v)
    }
    fn to_toml(&self) -> Option<toml::Value> {
        Some(toml::Value::Array(
            self.iter().cloned().map(toml::Value::String).collect(),
        ))
    }
    fn show(&self) -> Option<String> {
        Some(if self.is_empty() {
            "none".into()
        } else {
            self.join(",")
        })
    }
}

/// A duration with a unit: `"5s"` in the file, `5s` as a flag.
impl Value for Duration {
    fn flag(arg: Arg) -> Arg {
        arg.value_parser(parse_duration)
    }
    fn from_flag(m: &ArgMatches, id: &str) -> Option<Self> {
        one(m, id)
    }
    fn from_toml(v: toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::String(s) => parse_duration(&s),
            toml::Value::Integer(n) => Err(format!(
                "a duration needs a unit: write \"{n}ms\" or \"{n}s\", not {n}"
            )),
            other => Err(format!(
                "expected a duration such as \"5s\", found {}",
                other.type_str()
            )),
        }
    }
    fn to_toml(&self) -> Option<toml::Value> {
        Some(toml::Value::String(format_duration(*self)))
    }
    fn show(&self) -> Option<String> {
        Some(format_duration(*self))
    }
}

/// A setting without a default: `None` means unset (each such setting says what unset
/// means).
impl<T: Value> Value for Option<T> {
    fn flag(arg: Arg) -> Arg {
        T::flag(arg)
    }
    fn from_flag(m: &ArgMatches, id: &str) -> Option<Self> {
        T::from_flag(m, id).map(Some)
    }
    fn from_toml(v: toml::Value) -> Result<Self, String> {
        T::from_toml(v).map(Some)
    }
    fn to_toml(&self) -> Option<toml::Value> {
        self.as_ref().and_then(T::to_toml)
    }
    fn show(&self) -> Option<String> {
        self.as_ref().and_then(T::show)
    }
    fn relative_to(&mut self, base: &Path) {
        if let Some(v) = self {
            v.relative_to(base);
        }
    }
}

/// Parses `250ms`, `5s`, `2m`, `1h`, or a sequence such as `1m30s` (units `ms`, `s`, `m`
/// or `min`, `h`). A bare number is refused: its unit would be a guess.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = |why: &str| {
        format!("invalid duration '{s}': {why}; write a number and a unit (ms, s, m, h), e.g. 500ms, 5s, 1m30s")
    };
    let text = s.trim();
    if text.is_empty() {
        return Err(bad("empty"));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad("expected a number"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| bad("number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        let ms_per: u64 = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "" => return Err(bad("missing unit")),
            _ => return Err(bad(&format!("unknown unit '{unit}'"))),
        };
        let ms = n.checked_mul(ms_per).ok_or_else(|| bad("too long"))?;
        total = total
            .checked_add(Duration::from_millis(ms))
            .ok_or_else(|| bad("too long"))?;
    }
    Ok(total)
}

/// The duration's shortest spelling in whole hours, minutes, seconds and milliseconds
/// (`90s` → `1m30s`, zero → `0s`); below a millisecond is dropped.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1000), ("ms", 1)] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// A value under a duration setting's former `…_ms` name: a bare number of milliseconds (as
/// before), or a duration with a unit.
pub fn parse_millis(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<u64>() {
        Ok(ms) => Ok(Duration::from_millis(ms)),
        Err(_) => parse_duration(s),
    }
}

/// [`parse_millis`] for a TOML value.
pub fn millis_from_toml(v: toml::Value) -> Result<Duration, String> {
    match v {
        toml::Value::Integer(n) => u64::try_from(n)
            .map(Duration::from_millis)
            .map_err(|_| format!("expected a number of milliseconds, found {n}")),
        toml::Value::String(s) => parse_millis(&s),
        other => Err(format!(
            "expected a number of milliseconds, found {}",
            other.type_str()
        )),
    }
}

/// An inclusive TCP port range, written `START-END` (e.g. `15000-15999`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    pub fn as_tuple(self) -> (u16, u16) {
        (self.start, self.end)
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("invalid port range '{s}': expected START-END with 0 < START <= END <= 65535, e.g. 15000-15999")
        };
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let start: u16 = a.trim().parse().map_err(|_| bad())?;
        let end: u16 = b.trim().parse().map_err(|_| bad())?;
        if start == 0 || start > end {
            return Err(bad());
        }
        Ok(PortRange { start, end })
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// Where fogd keeps its metadata: `sqlite` (the embedded default, `DATA_DIR/store.sqlite`)
/// or `etcd://HOST:PORT[,HOST:PORT…]` (an etcd 3.4+ cluster, keys under
/// [`fog_store::EtcdStore::DEFAULT_PREFIX`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSetting {
    Sqlite,
    /// Endpoint URLs (`http://HOST:PORT`).
    Etcd(Vec<String>),
}

impl FromStr for StoreSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "sqlite" {
            return Ok(StoreSetting::Sqlite);
        }
        if s.starts_with("etcd://") {
            return fog_store::EtcdStore::parse_url(s).map(StoreSetting::Etcd);
        }
        Err(format!(
            "invalid store '{s}': expected sqlite or etcd://HOST:PORT[,HOST:PORT...]"
        ))
    }
}

impl std::fmt::Display for StoreSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSetting::Sqlite => write!(f, "sqlite"),
            StoreSetting::Etcd(endpoints) => {
                let hosts: Vec<&str> = endpoints
                    .iter()
                    .map(|e| e.trim_start_matches("http://"))
                    .collect();
                write!(f, "etcd://{}", hosts.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit_and_print_back() {
        let ms = Duration::from_millis;
        for (text, d) in [
            ("250ms", ms(250)),
            ("5s", ms(5000)),
            ("2m", ms(120_000)),
            ("2min", ms(120_000)),
            ("1h", ms(3_600_000)),
            ("1m30s", ms(90_000)),
            ("1m 30s", ms(90_000)),
            ("0s", Duration::ZERO),
        ] {
            assert_eq!(parse_duration(text), Ok(d), "{text}");
        }
        for bad in ["", "5", "s", "5 parsecs", "1.5s", "-1s", "5sec"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for (d, text) in [
            (ms(250), "250ms"),
            (ms(1000), "1s"),
            (ms(60_000), "1m"),
            (ms(90_500), "1m30s500ms"),
            (ms(3_600_000), "1h"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d));
        }
        assert_eq!(parse_millis("250"), Ok(ms(250)));
        assert_eq!(parse_millis("2s"), Ok(ms(2000)));
        assert_eq!(millis_from_toml(toml::Value::Integer(40)), Ok(ms(40)));
        assert!(millis_from_toml(toml::Value::Integer(-1)).is_err());
        assert!(Duration::from_toml(toml::Value::Integer(5)).is_err());
    }
}
