//! The KServe V1 protocol's request: `{"instances": [...]}`. What each
//! instance holds is up to the processing (see `crate::process`).

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
pub struct PredictRequest {
    pub instances: Vec<Value>,
}

/// Parses a V1 predict body.
///
/// # Errors
/// Malformed JSON or no `instances` array, as a message fit for a 400.
pub fn decode_request(body: &[u8]) -> Result<PredictRequest, String> {
    serde_json::from_slice(body)
        .map_err(|e| format!("malformed V1 request (expected {{\"instances\": [...]}}): {e}"))
}

/// One part of a `multipart/form-data` body: its form field name and bytes.
#[derive(Debug, PartialEq)]
pub struct Part<'a> {
    pub name: String,
    pub body: &'a [u8],
}

/// The boundary of a `multipart/form-data` content type, if it is one.
pub fn multipart_boundary(content_type: &str) -> Option<&str> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (key, value) = p.split_once('=')?;
        key.trim().eq_ignore_ascii_case("boundary").then(|| value.trim().trim_matches('"'))
    })
}

/// Splits a `multipart/form-data` body (RFC 7578) into its named parts,
/// as `curl -F image=@digit.png` sends them.
///
/// # Errors
/// A body that does not follow the format, or a part without a name.
pub fn multipart_parts<'a>(boundary: &str, body: &'a [u8]) -> Result<Vec<Part<'a>>, String> {
    if boundary.is_empty() || boundary.len() > 70 {
        return Err("the multipart boundary must be 1 to 70 characters".into());
    }
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let find =
        |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).position(|w| w == needle);
    let start = find(body, delimiter).ok_or("the multipart body has no boundary line")?;
    let mut rest = &body[start + delimiter.len()..];
    let mut parts = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        rest = rest.strip_prefix(b"\r\n").ok_or("a multipart boundary line must end in CRLF")?;
        let headers_end =
            find(rest, b"\r\n\r\n").ok_or("a multipart part has no end of headers")?;
        let headers = std::str::from_utf8(&rest[..headers_end])
            .map_err(|_| "multipart part headers are not text")?;
        let name = headers
            .split("\r\n")
            .filter(|h| {
                h.split_once(':')
                    .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("content-disposition"))
            })
            .find_map(|h| {
                h.split(';').find_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    (k.trim() == "name").then(|| v.trim().trim_matches('"').to_string())
                })
            })
            .ok_or("a multipart part has no Content-Disposition name")?;
        rest = &rest[headers_end + 4..];
        let mut closing = b"\r\n".to_vec();
        closing.extend_from_slice(delimiter);
        let end = find(rest, &closing).ok_or("a multipart part is not closed by the boundary")?;
        parts.push(Part { name, body: &rest[..end] });
        rest = &rest[end + closing.len()..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_bodies_split_into_named_parts() {
        let ct = "multipart/form-data; boundary=\"XyZ\"";
        let boundary = multipart_boundary(ct).unwrap();
        assert_eq!(boundary, "XyZ");
        assert_eq!(multipart_boundary("application/json"), None);
        let body = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\
Content-Type: image/png\r\n\r\n\x89PNG\r\n--X\r\n--XyZ\r\ncontent-disposition: form-data; name=meta\r\n\r\n{}\r\n--XyZ--\r\n";
        let parts = multipart_parts(boundary, body).unwrap();
        assert_eq!(
            parts,
            vec![
                Part { name: "image".into(), body: b"\x89PNG\r\n--X" },
                Part { name: "meta".into(), body: b"{}" },
            ]
        );
        for bad in [
            &b"no boundary"[..],
            b"--XyZ\r\nContent-Type: x\r\n\r\nabc\r\n--XyZ--",
            b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nunterminated",
        ] {
            assert!(multipart_parts(boundary, bad).is_err());
        }
    }

    #[test]
    fn instances_are_required() {
        let ok = decode_request(br#"{"instances": [[1, 2], {"a": 1}]}"#).unwrap();
        assert_eq!(ok.instances.len(), 2);
        for bad in [&br#"{"inputs": []}"#[..], b"[1]", b"{", br#"{"instances": 3}"#] {
            let err = decode_request(bad).unwrap_err();
            assert!(err.contains("malformed V1 request"), "{err}");
        }
    }
}
