//! The X.509 checks behind gateway credentials: the certificate in a Secret (found
//! as Istio looks for it), its first PEM block, and each certificate's validity window,
//! read from the DER without a full X.509 parser.

use trellis_api::Resource;
use trellis_api::kube::decode_base64;

/// Decodes the base64 body of a PEM block leniently: whitespace is skipped, padding is
/// optional, and the URL-safe `-_` stand for `+/`. The decoding itself is
/// [`decode_base64`]'s, on the body put in its strict form.
fn pem_base64(text: &str) -> Option<Vec<u8>> {
    let mut body: String = text
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    // Padding ends the data: nothing but more `=` may follow it.
    let data = body.trim_end_matches('=').len();
    if body[..data].contains('=') {
        return None;
    }
    body.truncate(data);
    // A lone last character carries fewer than 8 bits, so no byte; it must still be base64.
    if body.len() % 4 == 1 {
        let last = body.pop()?;
        if !(last.is_ascii_alphanumeric() || last == '+' || last == '/') {
            return None;
        }
    }
    while !body.len().is_multiple_of(4) {
        body.push('=');
    }
    decode_base64(&body).ok()
}

/// The bytes of the first PEM block in `data` (what Go's `pem.Decode` returns), if any.
pub fn pem_first_block(data: &[u8]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines();
    let label = loop {
        let line = lines.next()?.trim();
        if let Some(rest) = line.strip_prefix("-----BEGIN ")
            && let Some(label) = rest.strip_suffix("-----")
        {
            break label.to_string();
        }
    };
    let end = format!("-----END {label}-----");
    let mut body = String::new();
    for line in lines {
        let line = line.trim();
        if line == end {
            return pem_base64(&body);
        }
        // PEM headers (`Proc-Type: ...`) carry no base64.
        if !line.contains(':') {
            body.push_str(line);
        }
    }
    None
}

/// One DER element: (tag, contents, rest).
fn der_next(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | b as usize;
        }
        rest = &rest[n..];
        len
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// Seconds since the Unix epoch of an ASN.1 UTCTime (0x17) or GeneralizedTime (0x18).
fn der_time(tag: u8, bytes: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(bytes).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = s.get(..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, s.get(2..)?)
        }
        0x18 => (s.get(..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    let field = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day, hour, minute) = (field(0)?, field(2)?, field(4)?, field(6)?);
    let second = field(8).unwrap_or(0);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The validity window `(not_before, not_after)` of each DER certificate in `der`.
pub fn certificate_validity(mut der: &[u8]) -> Result<Vec<(i64, i64)>, &'static str> {
    const SEQUENCE: u8 = 0x30;
    let bad = "not an X.509 certificate";
    let mut out = Vec::new();
    while !der.is_empty() {
        let (tag, cert, rest) = der_next(der).ok_or(bad)?;
        der = rest;
        if tag != SEQUENCE {
            return Err(bad);
        }
        let (tag, tbs, after_tbs) = der_next(cert).ok_or(bad)?;
        if tag != SEQUENCE {
            return Err(bad);
        }
        // signatureAlgorithm and signatureValue follow the signed part.
        let (alg_tag, _, after_alg) = der_next(after_tbs).ok_or(bad)?;
        let (sig_tag, _, _) = der_next(after_alg).ok_or(bad)?;
        if alg_tag != SEQUENCE || sig_tag != 0x03 {
            return Err(bad);
        }
        let (mut tag, mut body, mut rest) = der_next(tbs).ok_or(bad)?;
        if tag == 0xa0 {
            // [0] version
            (tag, body, rest) = der_next(rest).ok_or(bad)?;
        }
        let _ = body;
        if tag != 0x02 {
            return Err(bad); // serialNumber
        }
        let (t1, _, rest) = der_next(rest).ok_or(bad)?; // signature
        let (t2, _, rest) = der_next(rest).ok_or(bad)?; // issuer
        let (t3, validity, _) = der_next(rest).ok_or(bad)?;
        if t1 != SEQUENCE || t2 != SEQUENCE || t3 != SEQUENCE {
            return Err(bad);
        }
        let (nb_tag, nb, rest) = der_next(validity).ok_or(bad)?;
        let (na_tag, na, _) = der_next(rest).ok_or(bad)?;
        let not_before = der_time(nb_tag, nb).ok_or(bad)?;
        let not_after = der_time(na_tag, na).ok_or(bad)?;
        out.push((not_before, not_after));
    }
    if out.is_empty() {
        return Err(bad);
    }
    Ok(out)
}

/// Checks a PEM certificate as Istio does before serving it: the first PEM block must
/// hold X.509 certificates, each valid at `now` (seconds since the epoch).
pub fn check_certificate(pem: &[u8], now: i64) -> Result<(), &'static str> {
    let der = pem_first_block(pem).ok_or("the certificate is not PEM-encoded")?;
    for (not_before, not_after) in certificate_validity(&der)? {
        if now > not_after {
            return Err("the certificate has expired");
        }
        if now < not_before {
            return Err("the certificate is not valid yet");
        }
    }
    Ok(())
}

/// Seconds since the Unix epoch, now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The value of `key` in a Secret: `data` (base64; the loader refuses a Secret whose
/// `data` is not), else `stringData` (plain).
pub fn secret_value(secret: &Resource, key: &str) -> Option<Vec<u8>> {
    if let Some(v) = secret.raw["data"][key].as_str() {
        return decode_base64(v).ok();
    }
    secret.raw["stringData"][key]
        .as_str()
        .map(|s| s.as_bytes().to_vec())
}

/// A Secret without a non-empty certificate and key under the names Istio reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "it needs the keys `tls.crt` and `tls.key` (or `cert` and `key`), non-empty; it has {}",
    if found.is_empty() { "none".to_string() } else { found.join(", ") }
)]
pub struct MissingCertificateKeys {
    /// The keys the Secret has (`data` and `stringData`), sorted.
    pub found: Vec<String>,
}

/// The certificate a gateway would serve from `secret`, found as Istio looks for it:
/// `cert`/`key`, else `tls.crt`/`tls.key`, both non-empty.
pub fn secret_certificate(secret: &Resource) -> Result<Vec<u8>, MissingCertificateKeys> {
    for (cert, key) in [("cert", "key"), ("tls.crt", "tls.key")] {
        if let (Some(c), Some(k)) = (secret_value(secret, cert), secret_value(secret, key))
            && !c.is_empty()
            && !k.is_empty()
        {
            return Ok(c);
        }
    }
    let mut found: Vec<String> = ["data", "stringData"]
        .iter()
        .flat_map(|f| secret.raw[*f].as_object().into_iter().flatten())
        .map(|(k, _)| k.clone())
        .collect();
    found.sort();
    Err(MissingCertificateKeys { found })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_bodies_decode_leniently() {
        assert_eq!(
            pem_base64("aHVzaCBodXNoIGh1c2gK").as_deref(),
            Some(&b"hush hush hush\n"[..])
        );
        assert_eq!(pem_base64("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(pem_base64("YWI").as_deref(), Some(&b"ab"[..]));
        assert_eq!(pem_base64("Y W\tI =\n=").as_deref(), Some(&b"ab"[..]));
        assert_eq!(pem_base64("-_-_").as_deref(), pem_base64("+/+/").as_deref());
        assert_eq!(pem_base64("YWJjZ").as_deref(), Some(&b"abc"[..]));
        assert!(pem_base64("a$b").is_none());
        assert!(pem_base64("YWJjZ$").is_none());
        assert!(pem_base64("YQ==YQ").is_none());
    }

    #[test]
    fn civil_days_are_right() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(der_time(0x17, b"230314061541Z"), Some(1_678_774_541));
        assert_eq!(der_time(0x18, b"21220218061836Z"), Some(4_800_838_716));
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(check_certificate(b"hush hush hush\n", 0).is_err());
        let pem = b"-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
        assert!(check_certificate(pem, 0).is_err());
    }
}
