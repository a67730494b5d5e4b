//! Rules for single values inside a policy: operation ports as decimal text, path
//! templates Envoy supports, service account references, and Go's boolean spellings
//! (the dry-run annotation). Each says what is wrong; where it is, is the caller's.

/// An operation port: decimal digits, at most 65535.
pub fn check_port_text(port: &str) -> Result<u16, String> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "bad port ({port}): ports are decimal numbers written as text, not port names"
        ));
    }
    match port.parse::<u32>() {
        Ok(p) if p <= 65535 => Ok(p as u16),
        _ => Err(format!("bad port ({port}): must be at most 65535")),
    }
}

/// Template forms Envoy does not support once a path uses `{*}` or `{**}`: named
/// variables, empty braces, and bare `*`/`**` segments.
static UNSUPPORTED_TEMPLATE: std::sync::LazyLock<Option<regex::Regex>> =
    std::sync::LazyLock::new(|| regex::Regex::new(r"/\{\w+=\*\*?\}|\{\w*\}|/\*\*?|\*\*?/").ok());

/// A path template (`{*}`, `{**}`) must use only the forms Envoy supports.
pub(super) fn check_path_template(path: &str) -> Result<(), String> {
    if !(path.contains("{*}") || path.contains("{**}")) {
        return Ok(());
    }
    if UNSUPPORTED_TEMPLATE
        .as_ref()
        .is_some_and(|re| re.is_match(path))
    {
        return Err(format!(
            "invalid or unsupported path template `{path}`: use only `{{*}}` and `{{**}}` as whole segments"
        ));
    }
    Ok(())
}

/// A service account reference: `name` or `namespace/name`, no wildcards.
pub(super) fn check_service_account(sa: &str) -> Result<(), String> {
    if sa.is_empty() {
        return Err("empty value not allowed".into());
    }
    if sa.len() > 320 {
        return Err(format!(
            "service account `{sa}` is longer than 320 characters"
        ));
    }
    if sa.contains('*') {
        return Err(format!(
            "service account `{sa}`: wildcards are not supported"
        ));
    }
    let parts: Vec<&str> = sa.split('/').collect();
    if parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "service account `{sa}` must be `name` or `namespace/name`"
        ));
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
