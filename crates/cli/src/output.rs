//! Terminal output: colours that switch off when not a TTY (or with NO_COLOR),
//! and the YAML writer for `-o yaml`.

use anstyle::{AnsiColor, Style};

pub const ERROR: Style = AnsiColor::Red.on_default().bold();
pub const WARNING: Style = AnsiColor::Yellow.on_default().bold();
pub const INFO: Style = AnsiColor::Cyan.on_default();
pub const OK: Style = AnsiColor::Green.on_default().bold();

/// `-o` formats for data output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Yaml,
}

/// Writes JSON as block-style YAML (the writer is crates/api's, beside its parser).
pub use trellis_api::yaml::to_yaml;
