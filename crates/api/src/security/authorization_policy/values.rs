//! Rules for single values inside a policy: operation ports as decimal text, path
//! templates Envoy supports, service account references, and Go's boolean spellings
//! (the dry-run annotation). Each error says what is wrong; where, is the caller's.

/// Why an operation port (`ports`, `notPorts`, a `destination.port` value) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortTextError {
    #[error("bad port ({0}): ports are decimal numbers written as text, not port names")]
    NotDecimal(String),
    #[error("bad port ({0}): must be at most 65535")]
    TooLarge(String),
}

/// A path that uses `{*}` or `{**}` together with a form Envoy does not support.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid or unsupported path template `{0}`: use only `{{*}}` and `{{**}}` as whole segments"
)]
pub struct PathTemplateError(pub String);

/// Why a `serviceAccounts` entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceAccountError {
    #[error("empty value not allowed")]
    Empty,
    #[error("service account `{0}` is longer than 320 characters")]
    TooLong(String),
    #[error("service account `{0}`: wildcards are not supported")]
    Wildcard(String),
    #[error("service account `{0}` must be `name` or `namespace/name`")]
    NotNameOrNamespaced(String),
}

/// An operation port: decimal digits, at most 65535.
pub fn check_port_text(port: &str) -> Result<u16, PortTextError> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PortTextError::NotDecimal(port.to_string()));
    }
    match port.parse::<u32>() {
        Ok(p) if p <= 65535 => Ok(p as u16),
        _ => Err(PortTextError::TooLarge(port.to_string())),
    }
}

/// Template forms Envoy does not support once a path uses `{*}` or `{**}`: named
/// variables, empty braces, and bare `*`/`**` segments.
static UNSUPPORTED_TEMPLATE: std::sync::LazyLock<Option<regex::Regex>> =
    std::sync::LazyLock::new(|| regex::Regex::new(r"/\{\w+=\*\*?\}|\{\w*\}|/\*\*?|\*\*?/").ok());

/// A path template (`{*}`, `{**}`) must use only the forms Envoy supports.
pub(super) fn check_path_template(path: &str) -> Result<(), PathTemplateError> {
    if !(path.contains("{*}") || path.contains("{**}")) {
        return Ok(());
    }
    if UNSUPPORTED_TEMPLATE
        .as_ref()
        .is_some_and(|re| re.is_match(path))
    {
        return Err(PathTemplateError(path.to_string()));
    }
    Ok(())
}

/// A service account reference: `name` or `namespace/name`, no wildcards.
pub(super) fn check_service_account(sa: &str) -> Result<(), ServiceAccountError> {
    if sa.is_empty() {
        return Err(ServiceAccountError::Empty);
    }
    if sa.len() > 320 {
        return Err(ServiceAccountError::TooLong(sa.to_string()));
    }
    if sa.contains('*') {
        return Err(ServiceAccountError::Wildcard(sa.to_string()));
    }
    let parts: Vec<&str> = sa.split('/').collect();
    if parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(ServiceAccountError::NotNameOrNamespaced(sa.to_string()));
    }
    Ok(())
}

/// Go's `strconv.ParseBool` spellings, which is what the dry-run annotation accepts.
pub(super) fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}
