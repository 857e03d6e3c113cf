//! Checks provider tokens the way APNs does: an ES256 JWT whose header names
//! the key (`kid`) and whose claims name the team (`iss`) and the time it
//! was made (`iat`), signed with the P-256 key of the `.p8` file.
//!
//! The mock APNs records the `authorization` header of every request; tests
//! hand it to [`verify`] with the test key's public half, so a token with a
//! wrong signature, key ID or team fails the test.

use data_encoding::BASE64URL_NOPAD;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};

/// The claims of a token that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub kid: String,
    pub iss: String,
    pub iat: u64,
}

/// Verifies `authorization` (`bearer <jwt>`) against the uncompressed
/// P-256 public key `public` and returns its claims.
pub fn verify(authorization: &str, public: &[u8]) -> Result<Claims, String> {
    let jwt = authorization
        .strip_prefix("bearer ")
        .ok_or_else(|| format!("not a bearer token: {authorization:.20}"))?;
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err(format!("a JWT has three parts, this has {}", parts.len()));
    };
    let decode = |part: &str| {
        BASE64URL_NOPAD
            .decode(part.as_bytes())
            .map_err(|e| format!("not base64url without padding: {e}"))
    };
    let signature = decode(signature)?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public)
        .verify(format!("{header}.{claims}").as_bytes(), &signature)
        .map_err(|_| "ES256 signature does not verify with the test key".to_string())?;
    let header = String::from_utf8(decode(header)?).map_err(|e| e.to_string())?;
    let claims = String::from_utf8(decode(claims)?).map_err(|e| e.to_string())?;
    let header = object(&header)?;
    let claims = object(&claims)?;
    if field(&header, "alg")? != "ES256" {
        return Err(format!("alg must be ES256: {header:?}"));
    }
    Ok(Claims {
        kid: field(&header, "kid")?,
        iss: field(&claims, "iss")?,
        iat: field(&claims, "iat")?
            .parse()
            .map_err(|_| "iat must be a whole number".to_string())?,
    })
}

type Object = std::collections::BTreeMap<String, miniserde::json::Value>;

fn object(text: &str) -> Result<Object, String> {
    match miniserde::json::from_str::<miniserde::json::Value>(text) {
        Ok(miniserde::json::Value::Object(o)) => Ok(o.into_iter().collect()),
        _ => Err(format!("not a JSON object: {text}")),
    }
}

fn field(object: &Object, name: &str) -> Result<String, String> {
    use miniserde::json::{Number, Value};
    match object.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(Number::U64(n))) => Ok(n.to_string()),
        other => Err(format!("`{name}` missing or of the wrong type: {other:?}")),
    }
}
