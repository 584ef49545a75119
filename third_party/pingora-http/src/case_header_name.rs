// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

use crate::*;
use bytes::Bytes;
use http::header;

#[derive(Debug, Clone)]
pub struct CaseHeaderName(Bytes);

impl CaseHeaderName {
    pub fn new(name: String) -> Self {
        CaseHeaderName(name.into())
    }
}

impl CaseHeaderName {
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    pub fn from_slice(buf: &[u8]) -> Self {
        CaseHeaderName(Bytes::copy_from_slice(buf))
    }
}

/// A trait that converts into case-sensitive header names.
pub trait IntoCaseHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName;

    /// edge-proxy patch: the name both header maps key by, with the case to
    /// write. By default parsed from the case-preserved bytes, which for a
    /// name outside http's standard table allocates a copy (and cloning that
    /// copy into the case map allocates again). A `HeaderName` is already
    /// parsed, and a lowercase `&'static str` is borrowed as it is.
    fn into_header_names(self) -> Result<(HeaderName, CaseHeaderName)>
    where
        Self: Sized,
    {
        parsed_header_names(self.into_case_header_name())
    }
}

// edge-proxy patch: the name parsed from the case-preserved bytes.
fn parsed_header_names(case_header_name: CaseHeaderName) -> Result<(HeaderName, CaseHeaderName)> {
    let header_name = HeaderName::try_from(case_header_name.as_slice())
        .or_err(InvalidHTTPHeader, "invalid header name")?;
    Ok((header_name, case_header_name))
}

impl IntoCaseHeaderName for CaseHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        self
    }
}

impl IntoCaseHeaderName for String {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.into())
    }
}

impl IntoCaseHeaderName for &'static str {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.into())
    }

    // edge-proxy patch: see `into_header_names` above.
    fn into_header_names(self) -> Result<(HeaderName, CaseHeaderName)> {
        // Lowercase token bytes are a name `HeaderName::from_static` accepts
        // (it panics on anything else): no parse into a new allocation.
        let lowercase_token = !self.is_empty()
            && self.len() <= 64
            && self.bytes().all(|b| {
                matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'!' | b'#'
                    | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'^' | b'`' | b'|' | b'~')
            });
        if lowercase_token {
            return Ok((HeaderName::from_static(self), self.into_case_header_name()));
        }
        parsed_header_names(self.into_case_header_name())
    }
}

impl IntoCaseHeaderName for HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(titled_header_name(&self))
    }

    // edge-proxy patch: see `into_header_names` above; already parsed.
    fn into_header_names(self) -> Result<(HeaderName, CaseHeaderName)> {
        let case_header_name = CaseHeaderName(titled_header_name(&self));
        Ok((self, case_header_name))
    }
}

impl IntoCaseHeaderName for &HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(titled_header_name(self))
    }

    // edge-proxy patch: see `into_header_names` above; already parsed.
    fn into_header_names(self) -> Result<(HeaderName, CaseHeaderName)> {
        Ok((self.clone(), CaseHeaderName(titled_header_name(self))))
    }
}

impl IntoCaseHeaderName for Bytes {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self)
    }
}

fn titled_header_name(header_name: &HeaderName) -> Bytes {
    titled_header_name_str(header_name).map_or_else(
        || Bytes::copy_from_slice(header_name.as_str().as_bytes()),
        |s| Bytes::from_static(s.as_bytes()),
    )
}

pub(crate) fn titled_header_name_str(header_name: &HeaderName) -> Option<&'static str> {
    Some(match *header_name {
        header::ACCEPT_RANGES => "Accept-Ranges",
        header::AGE => "Age",
        header::CACHE_CONTROL => "Cache-Control",
        header::CONNECTION => "Connection",
        header::CONTENT_TYPE => "Content-Type",
        header::CONTENT_ENCODING => "Content-Encoding",
        header::CONTENT_LENGTH => "Content-Length",
        header::DATE => "Date",
        header::TRANSFER_ENCODING => "Transfer-Encoding",
        header::HOST => "Host",
        header::SERVER => "Server",
        header::SET_COOKIE => "Set-Cookie",
        // TODO: add more const header here to map to their titled case
        // TODO: automatically upper case the first letter?
        _ => {
            return None;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_case_header_name() {
        assert_eq!("FoO".into_case_header_name().as_slice(), b"FoO");
        assert_eq!("FoO".to_string().into_case_header_name().as_slice(), b"FoO");
        assert_eq!(header::SERVER.into_case_header_name().as_slice(), b"Server");
    }

    // edge-proxy patch: the names `into_header_names` gives, by each path.
    #[test]
    fn test_into_header_names() {
        let (name, case) = "x-forwarded-for".into_header_names().unwrap();
        assert_eq!(
            (name.as_str(), case.as_slice()),
            ("x-forwarded-for", &b"x-forwarded-for"[..])
        );
        let (name, case) = "host".into_header_names().unwrap();
        assert_eq!((name, case.as_slice()), (header::HOST, &b"host"[..]));
        let (name, case) = "X-Mixed-Case".into_header_names().unwrap();
        assert_eq!(
            (name.as_str(), case.as_slice()),
            ("x-mixed-case", &b"X-Mixed-Case"[..])
        );
        assert!("bad name".into_header_names().is_err());
        assert!("".into_header_names().is_err());
        let (name, case) = header::SET_COOKIE.into_header_names().unwrap();
        assert_eq!(
            (name, case.as_slice()),
            (header::SET_COOKIE, &b"Set-Cookie"[..])
        );
        let custom = HeaderName::from_static("x-request-id");
        let (name, case) = (&custom).into_header_names().unwrap();
        assert_eq!(
            (name.as_str(), case.as_slice()),
            ("x-request-id", &b"x-request-id"[..])
        );
    }
}
