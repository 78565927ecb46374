//! `settings!`: turns the one declaration of each setting (in `config/mod.rs`) into
//! everything that needs it — the `fogd serve` flags and their environment variables
//! ([`ServeArgs`](super::ServeArgs), a hand-written `clap::Args`), the TOML file's keys
//! ([`FileConfig`](super::FileConfig), serde with unknown keys refused), the resolved
//! [`Settings`](super::Settings) with their defaults, the precedence
//! (flag > environment > file > default), the checks, and the documentation
//! ([`fields`](super::fields): `--help`, `fogd config-example`, the README table).
//!
//! A setting's flag is `--` + its key with hyphens, its environment variable `FOGD_` + its
//! key in capitals. A duration setting renamed from a `…_ms` key keeps answering to the old
//! flag, variable and key (hidden; a bare number there is milliseconds).

/// Declares every setting of `fogd serve`. Grammar of one entry (the order of the keys is
/// fixed; those in brackets are optional):
///
/// ```text
/// /// Short help (first paragraph: `-h`, the README table).
/// ///
/// /// Longer explanation (`--help`, `fogd config-example`).
/// key: Type {
///     default: <expression of Type>,   // `None` for an Option<T> setting left unset
///     value_name: "NAME",              // in `--help`
///     example: r#"<TOML value>"#,      // shown in the example file when unset by default
///     [unset: "what unset means",]     // for Option<T> settings
///     [check: <fn(&Type) -> Result<(), String>>,]
///     [legacy_ms: old_key_ms,]         // a Duration setting's former millisecond key
///     [legacy_flags: ["old-flag"],]    // further former flag names of the legacy key
/// }
/// ```
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident : $ty:ty {
            default: $default:expr,
            value_name: $value_name:literal,
            example: $example:literal,
            $(unset: $unset:literal,)?
            $(check: $check:expr,)?
            $(legacy_ms: $legacy:ident,)?
            $(legacy_flags: [$($legacy_flag:literal),*],)?
        }
    )*) => {
        /// `fogd serve`'s command line and environment: every setting is optional here, so
        /// an absent flag (and absent variable) falls through to the file, then the default.
        #[derive(Debug, Default, Clone, PartialEq)]
        pub struct ServeArgs {
            /// `--config FILE` / `FOGD_CONFIG`.
            pub config: Option<std::path::PathBuf>,
            $(pub $name: Option<$ty>,)*
        }

        /// The TOML file: the same settings keyed by name. Unknown keys are an error.
        #[derive(serde::Deserialize, Debug, Default, PartialEq)]
        #[serde(deny_unknown_fields, default)]
        pub struct FileConfig {
            $(
                #[serde(deserialize_with = "crate::config::declare::de_value")]
                pub $name: Option<$ty>,
                $(
                    #[serde(deserialize_with = "crate::config::declare::de_millis")]
                    pub $legacy: Option<std::time::Duration>,
                )?
            )*
        }

        /// The resolved settings `fogd serve` runs with.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Settings {
            $(
                $(#[doc = $doc])*
                pub $name: $ty,
            )*
        }

        impl Default for Settings {
            fn default() -> Self {
                Settings { $($name: $default,)* }
            }
        }

        impl clap::FromArgMatches for ServeArgs {
            fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
                Ok(ServeArgs {
                    config: m.get_one::<std::path::PathBuf>("config").cloned(),
                    $($name: {
                        // Only a Duration setting has a former millisecond name.
                        $(let _: fn(std::time::Duration) -> $ty = |d| d; let _ = stringify!($legacy);)?
                        let legacy: Option<&str> = either!($(Some(stringify!($legacy)))?; None);
                        $crate::config::declare::from_flags::<$ty>(m, stringify!($name), legacy)
                    },)*
                })
            }

            fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
                *self = Self::from_arg_matches(m)?;
                Ok(())
            }
        }

        impl clap::Args for ServeArgs {
            fn augment_args(cmd: clap::Command) -> clap::Command {
                let mut cmd = cmd.arg($crate::config::declare::config_arg());
                for f in fields() {
                    cmd = cmd.arg((f.arg)(f.clap_arg()));
                    if let Some(legacy) = f.legacy_arg() {
                        cmd = cmd.arg(legacy);
                    }
                }
                cmd
            }

            fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
                Self::augment_args(cmd)
            }
        }

        impl Settings {
            /// Flag or environment variable (both in `args`) > `file` > default; then the
            /// checks.
            pub fn resolve(args: ServeArgs, file: FileConfig) -> anyhow::Result<Self> {
                let s = Settings {
                    $($name: {
                        let from_file = file.$name;
                        $(
                            if from_file.is_some() && file.$legacy.is_some() {
                                anyhow::bail!(
                                    "the config file sets both {} and its former name {}; keep {}",
                                    stringify!($name), stringify!($legacy), stringify!($name)
                                );
                            }
                            let from_file = from_file.or(file.$legacy);
                        )?
                        match args.$name.or(from_file) {
                            Some(v) => v,
                            None => $default,
                        }
                    },)*
                };
                $($(
                    let check: fn(&$ty) -> Result<(), String> = $check;
                    check(&s.$name).map_err(|e| anyhow::anyhow!("{} {e}", stringify!($name)))?;
                )?)*
                Ok(s)
            }
        }

        impl FileConfig {
            /// Makes every path relative to `base` (the file's directory).
            fn paths_relative_to(&mut self, base: &std::path::Path) {
                use $crate::config::value::Value as _;
                $(self.$name.relative_to(base);)*
            }
        }

        /// Every setting, in the order of `--help`, with its documentation and default.
        pub fn fields() -> Vec<$crate::config::declare::Field> {
            let d = Settings::default();
            vec![$({
                use $crate::config::value::Value as _;
                let unset: &'static str = either!($($unset)?; "");
                let legacy: Option<&'static str> = either!($(Some(stringify!($legacy)))?; None);
                let legacy_flags: &'static [&'static str] =
                    either!($(&[$($legacy_flag),*])?; &[]);
                $crate::config::declare::Field {
                    key: stringify!($name),
                    doc: concat!($($doc, "\n"),*),
                    value_name: $value_name,
                    example: $example,
                    default: d.$name.to_toml(),
                    shown_default: d.$name.show(),
                    unset,
                    legacy,
                    legacy_flags,
                    arg: <$ty as $crate::config::value::Value>::flag,
                }
            },)*]
        }
    };
}

/// `either!(VALUE; DEFAULT)` is VALUE, `either!(; DEFAULT)` is DEFAULT: an optional part
/// of a declaration with its fallback.
macro_rules! either {
    (; $default:expr) => {
        $default
    };
    ($value:expr; $default:expr) => {
        $value
    };
}

pub(crate) use either;
pub(crate) use settings;

use super::value::{millis_from_toml, parse_millis, Value};
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches};
use serde::Deserialize as _;

/// One setting as documentation sees it.
pub struct Field {
    /// The TOML key; the flag and the environment variable derive from it.
    pub key: &'static str,
    /// The doc comment: first paragraph short help, the rest the long one.
    pub doc: &'static str,
    pub value_name: &'static str,
    /// An example value, as TOML.
    pub example: &'static str,
    /// The default as TOML; `None` when unset by default.
    pub default: Option<toml::Value>,
    /// The default as `--help` shows it.
    pub shown_default: Option<String>,
    /// What unset means, for settings without a default.
    pub unset: &'static str,
    /// The former millisecond key of a duration setting.
    pub legacy: Option<&'static str>,
    /// Further former flag names of the former key.
    pub legacy_flags: &'static [&'static str],
    /// Gives the flag its type's parser.
    pub arg: fn(Arg) -> Arg,
}

/// `data_dir` → `data-dir`.
fn flag_name(key: &str) -> String {
    key.replace('_', "-")
}

/// `data_dir` → `FOGD_DATA_DIR`.
fn env_name(key: &str) -> String {
    format!("FOGD_{}", key.to_uppercase())
}

impl Field {
    pub fn flag(&self) -> String {
        format!("--{}", flag_name(self.key))
    }

    pub fn env(&self) -> String {
        env_name(self.key)
    }

    /// The doc's paragraphs, each on one line.
    pub fn paragraphs(&self) -> Vec<String> {
        self.doc
            .split("\n\n")
            .flat_map(|p| p.split("\n \n"))
            .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|p| !p.is_empty())
            .collect()
    }

    /// The first paragraph.
    pub fn summary(&self) -> String {
        self.paragraphs().into_iter().next().unwrap_or_default()
    }

    /// What the default is, in words: the value, or what unset means.
    pub fn default_text(&self) -> String {
        match &self.shown_default {
            Some(d) => d.clone(),
            None => self.unset.to_string(),
        }
    }

    /// Where the former name is still accepted, as a sentence.
    pub fn legacy_text(&self) -> Option<String> {
        let legacy = self.legacy?;
        let mut flags = vec![format!("--{}", flag_name(legacy))];
        flags.extend(self.legacy_flags.iter().map(|f| format!("--{f}")));
        Some(format!(
            "Formerly {legacy} (a number of milliseconds): {}, {} and that key are still accepted.",
            flags.join(", "),
            env_name(legacy)
        ))
    }

    /// The flag, with its environment variable and help; [`Field::arg`] adds the parser.
    pub fn clap_arg(&self) -> Arg {
        let default = format!("[default: {}]", self.default_text());
        let mut long = self.paragraphs();
        long.extend(self.legacy_text());
        long.push(default.clone());
        Arg::new(self.key)
            .long(flag_name(self.key))
            .env(env_name(self.key))
            .value_name(self.value_name)
            .help(format!("{} {default}", self.summary()))
            .long_help(long.join("\n\n"))
    }

    /// The hidden flag under the former millisecond name, if any.
    pub fn legacy_arg(&self) -> Option<Arg> {
        let legacy = self.legacy?;
        let mut arg = Arg::new(legacy)
            .long(flag_name(legacy))
            .env(env_name(legacy))
            .value_name("MS")
            .value_parser(parse_millis)
            .hide(true);
        for alias in self.legacy_flags {
            arg = arg.alias(*alias);
        }
        Some(arg)
    }
}

/// `--config FILE` / `FOGD_CONFIG`.
pub fn config_arg() -> Arg {
    Arg::new("config")
        .long("config")
        .env("FOGD_CONFIG")
        .value_name("FILE")
        .value_parser(clap::value_parser!(std::path::PathBuf))
        .help(
            "TOML configuration file; every key is optional and named like the flag with \
             underscores (data_dir = \"/srv/fogd\"). `fogd config-example` prints one with \
             every key, its default and its meaning. Flags and environment variables override \
             it.",
        )
}

/// A setting's value from the command line or the environment. With a former name too, a
/// flag beats an environment variable whichever name either uses; between equals the
/// current name wins.
pub fn from_flags<T: Value>(m: &ArgMatches, id: &str, legacy: Option<&str>) -> Option<T> {
    let current = T::from_flag(m, id);
    let Some(legacy) = legacy else {
        return current;
    };
    let old = m.get_one::<T>(legacy).cloned();
    let from_command_line = |id: &str| m.value_source(id) == Some(ValueSource::CommandLine);
    match (current, old) {
        (Some(_), Some(o)) if from_command_line(legacy) && !from_command_line(id) => Some(o),
        (Some(c), _) => Some(c),
        (None, o) => o,
    }
}

/// Deserializes a file key with its type's [`Value::from_toml`].
pub fn de_value<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Value,
{
    let v = toml::Value::deserialize(d)?;
    T::from_toml(v).map(Some).map_err(serde::de::Error::custom)
}

/// Deserializes a former `…_ms` key: a number of milliseconds (or a duration with a unit).
pub fn de_millis<'de, D>(d: D) -> Result<Option<std::time::Duration>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let v = toml::Value::deserialize(d)?;
    millis_from_toml(v)
        .map(Some)
        .map_err(serde::de::Error::custom)
}
