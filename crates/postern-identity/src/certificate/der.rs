//! The two things Postern reads from a client certificate itself: its validity and the URIs of
//! its subjectAltName extension (RFC 5280 sections 4.1 and 4.2.1.6).
//!
//! rustls and webpki verify the certificate (chain, signature, validity, key usage) but expose
//! neither field, so this is a DER walk limited to them: it skips every other field by its
//! length, and refuses, rather than guesses at, anything a DER certificate cannot hold
//! (indefinite or non-minimal lengths, high tag numbers, trailing bytes, a GeneralName of no
//! known kind, a URI that is not IA5String, two subjectAltName extensions). It only ever sees a
//! certificate the TLS handshake has already verified, and still never panics, whatever the
//! bytes. <https://www.rfc-editor.org/rfc/rfc5280#section-4.1>

/// Why a certificate could not be read; shown to the client after "cannot be read: ".
pub(super) type DerError = &'static str;

/// What Postern takes from a certificate.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct CertificateFields<'a> {
    /// `notBefore`, in seconds since the Unix epoch.
    pub not_before: i64,
    /// `notAfter`, in seconds since the Unix epoch: the last second the certificate is valid.
    pub not_after: i64,
    /// Every `uniformResourceIdentifier` of the subjectAltName, in order; empty without one.
    pub uris: Vec<&'a str>,
}

const BOOLEAN: u8 = 0x01;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const OBJECT_IDENTIFIER: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const SEQUENCE: u8 = 0x30;
/// `[0] EXPLICIT Version`.
const VERSION: u8 = 0xA0;
/// `[1] IMPLICIT UniqueIdentifier` and `[2]`: obsolete, skipped.
const ISSUER_UNIQUE_ID: u8 = 0x81;
const SUBJECT_UNIQUE_ID: u8 = 0x82;
/// `[3] EXPLICIT Extensions`.
const EXTENSIONS: u8 = 0xA3;
/// id-ce-subjectAltName, 2.5.29.17, as its DER content octets.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1D, 0x11];
/// GeneralName `[6] IMPLICIT IA5String`.
const URI: u8 = 0x86;
/// The other GeneralName kinds (RFC 5280 section 4.2.1.6): otherName, rfc822Name, dNSName,
/// x400Address, directoryName, ediPartyName, iPAddress, registeredID.
const OTHER_GENERAL_NAMES: &[u8] = &[0xA0, 0x81, 0x82, 0xA3, 0xA4, 0xA5, 0x87, 0x88];

const TRUNCATED: DerError = "it ends inside a field";

/// Reads the validity and subjectAltName URIs of a DER certificate.
pub(super) fn read(der: &[u8]) -> Result<CertificateFields<'_>, DerError> {
    let certificate = Reader(der).only(SEQUENCE)?;
    let mut certificate = Reader(certificate);
    let mut tbs = Reader(certificate.expect(SEQUENCE)?);
    if tbs.peek() == Some(VERSION) {
        tbs.next()?;
    }
    tbs.expect(INTEGER)?; // serialNumber
    tbs.expect(SEQUENCE)?; // signature
    tbs.expect(SEQUENCE)?; // issuer
    let mut validity = Reader(tbs.expect(SEQUENCE)?);
    let not_before = time(&mut validity)?;
    let not_after = time(&mut validity)?;
    if !validity.is_empty() {
        return Err("its validity holds more than two times");
    }
    tbs.expect(SEQUENCE)?; // subject
    tbs.expect(SEQUENCE)?; // subjectPublicKeyInfo
    let mut uris = None;
    while !tbs.is_empty() {
        match tbs.next()? {
            (ISSUER_UNIQUE_ID | SUBJECT_UNIQUE_ID, _) => {}
            (EXTENSIONS, extensions) => {
                let mut list = Reader(Reader(extensions).only(SEQUENCE)?);
                while !list.is_empty() {
                    let mut extension = Reader(list.expect(SEQUENCE)?);
                    let id = extension.expect(OBJECT_IDENTIFIER)?;
                    if extension.peek() == Some(BOOLEAN) {
                        extension.next()?; // critical
                    }
                    let value = extension.expect(OCTET_STRING)?;
                    if !extension.is_empty() {
                        return Err("an extension holds more than its id, criticality and value");
                    }
                    if id == SUBJECT_ALT_NAME {
                        if uris.is_some() {
                            return Err("it has two subjectAltName extensions");
                        }
                        uris = Some(general_names(value)?);
                    }
                }
            }
            _ => return Err("its tbsCertificate holds an unknown field"),
        }
    }
    Ok(CertificateFields {
        not_before,
        not_after,
        uris: uris.unwrap_or_default(),
    })
}

/// The URIs among a subjectAltName's GeneralNames.
fn general_names(value: &[u8]) -> Result<Vec<&str>, DerError> {
    let mut names = Reader(Reader(value).only(SEQUENCE)?);
    let mut uris = Vec::new();
    while !names.is_empty() {
        match names.next()? {
            (URI, uri) => {
                if !uri.is_ascii() {
                    return Err("a subjectAltName URI is not ASCII (IA5String)");
                }
                // ASCII is UTF-8.
                uris.push(std::str::from_utf8(uri).map_err(|_| "a URI is not ASCII")?);
            }
            (tag, _) if OTHER_GENERAL_NAMES.contains(&tag) => {}
            _ => return Err("its subjectAltName holds a name of no known kind"),
        }
    }
    Ok(uris)
}

/// A `Time` in RFC 5280's form (section 4.1.2.5): UTCTime `YYMMDDHHMMSSZ` for years 1950 to
/// 2049, GeneralizedTime `YYYYMMDDHHMMSSZ` otherwise; seconds since the Unix epoch.
fn time(reader: &mut Reader<'_>) -> Result<i64, DerError> {
    const BAD: DerError = "its validity holds a time not in RFC 5280's form";
    let (tag, text) = reader.next()?;
    let digits = match (tag, text.split_last()) {
        (UTC_TIME | GENERALIZED_TIME, Some((b'Z', digits))) => digits,
        _ => return Err(BAD),
    };
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(BAD);
    }
    let number = |range: std::ops::Range<usize>| {
        digits
            .get(range)
            .map(|ds| ds.iter().fold(0_i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy = number(0..2).ok_or(BAD)?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, 2)
        }
        (GENERALIZED_TIME, 14) => (number(0..4).ok_or(BAD)?, 4),
        _ => return Err(BAD),
    };
    let field = |at: usize| number(rest + at..rest + at + 2).ok_or(BAD);
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(BAD);
    }
    Ok(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`, <https://howardhinnant.github.io/date_algorithms.html#days_from_civil>).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// A cursor over DER bytes: tag, definite length, value.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }

    /// The next element's tag and value.
    fn next(&mut self) -> Result<(u8, &'a [u8]), DerError> {
        let (&tag, rest) = self.0.split_first().ok_or(TRUNCATED)?;
        if tag & 0x1F == 0x1F {
            return Err("it holds a tag number above 30, which no certificate field has");
        }
        let (&first, rest) = rest.split_first().ok_or(TRUNCATED)?;
        let (length, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            // 0x80 is BER's indefinite length; more than four octets is more than any
            // certificate (rustls bounds handshake messages far below 4 GiB).
            let octets = usize::from(first & 0x7F);
            if octets == 0 || octets > 4 {
                return Err("it holds a length DER does not allow");
            }
            let (octets, rest) = rest.split_at_checked(octets).ok_or(TRUNCATED)?;
            if octets.first() == Some(&0) {
                return Err("it holds a length DER does not allow (not minimal)");
            }
            let length = octets
                .iter()
                .fold(0_usize, |n, &octet| (n << 8) | usize::from(octet));
            if length < 0x80 {
                return Err("it holds a length DER does not allow (not minimal)");
            }
            (length, rest)
        };
        let (value, rest) = rest.split_at_checked(length).ok_or(TRUNCATED)?;
        self.0 = rest;
        Ok((tag, value))
    }

    /// The next element's value, which must have `tag`.
    fn expect(&mut self, tag: u8) -> Result<&'a [u8], DerError> {
        match self.next()? {
            (found, value) if found == tag => Ok(value),
            _ => Err("a field has an unexpected type"),
        }
    }

    /// The value of the one element these bytes hold, which must have `tag`.
    fn only(mut self, tag: u8) -> Result<&'a [u8], DerError> {
        let value = self.expect(tag)?;
        if self.is_empty() {
            Ok(value)
        } else {
            Err("it has bytes after its end")
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use std::time::Duration;

    use rcgen::{CertificateParams, CustomExtension, KeyPair, SanType, date_time_ymd};

    use super::*;

    fn certificate(edit: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        edit(&mut params);
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn uri(text: &str) -> SanType {
        SanType::URI(text.try_into().unwrap())
    }

    fn unix(year: i32, month: u8, day: u8) -> i64 {
        let secs = date_time_ymd(year, month, day) - date_time_ymd(1970, 1, 1);
        secs.whole_seconds()
    }

    #[test]
    fn reads_validity_and_uris() {
        // UTCTime (before 2050) and GeneralizedTime (from 2050), URIs among other names.
        let der = certificate(|params| {
            params.not_before = date_time_ymd(2024, 2, 29) + Duration::from_secs(3_723);
            params.not_after = date_time_ymd(2050, 1, 1);
            params
                .subject_alt_names
                .push(uri("spiffe://example.org/api"));
            params
                .subject_alt_names
                .push(SanType::IpAddress([127, 0, 0, 1].into()));
            params.subject_alt_names.push(uri("https://example.org/x"));
        });
        let fields = read(&der).unwrap();
        assert_eq!(fields.not_before, unix(2024, 2, 29) + 3_723);
        assert_eq!(fields.not_before, 1_709_168_523);
        assert_eq!(fields.not_after, unix(2050, 1, 1));
        assert_eq!(
            fields.uris,
            ["spiffe://example.org/api", "https://example.org/x"]
        );
        let plain = certificate(|_| {});
        let none = read(&plain).unwrap();
        assert!(none.uris.is_empty());
        assert_eq!(none.not_after, unix(4096, 1, 1));
    }

    #[test]
    fn times() {
        let parse = |tag: u8, text: &str| {
            let mut der = vec![tag, u8::try_from(text.len()).unwrap()];
            der.extend_from_slice(text.as_bytes());
            time(&mut Reader(&der))
        };
        let cases: &[(u8, &str, Result<i64, DerError>)] = &[
            (UTC_TIME, "700101000000Z", Ok(0)),
            (UTC_TIME, "491231235959Z", Ok(2_524_607_999)),
            (UTC_TIME, "500101000000Z", Ok(-631_152_000)),
            (GENERALIZED_TIME, "20000229120000Z", Ok(951_825_600)),
            (GENERALIZED_TIME, "99991231235959Z", Ok(253_402_300_799)),
        ];
        for (tag, text, expected) in cases {
            assert_eq!(parse(*tag, text), *expected, "{text}");
        }
        for (tag, text) in [
            (UTC_TIME, "19000229000000Z"),
            (GENERALIZED_TIME, "19000229000000Z"),
            (GENERALIZED_TIME, "20230229000000Z"),
            (GENERALIZED_TIME, "20231301000000Z"),
            (GENERALIZED_TIME, "20230100000000Z"),
            (GENERALIZED_TIME, "20230101240000Z"),
            (GENERALIZED_TIME, "20230101006000Z"),
            (GENERALIZED_TIME, "20230101000060Z"),
            (GENERALIZED_TIME, "20230101000000"),
            (GENERALIZED_TIME, "20230101000000.5Z"),
            (GENERALIZED_TIME, "20230101000000+0100"),
            (UTC_TIME, "2301010000Z"),
            (UTC_TIME, "23010100000-Z"),
            (UTC_TIME, "+30101000000Z"),
            (INTEGER, "700101000000Z"),
            (UTC_TIME, ""),
        ] {
            assert!(parse(tag, text).is_err(), "{text}");
        }
    }

    #[test]
    fn refuses_what_der_cannot_hold() {
        let der = certificate(|params| {
            params
                .subject_alt_names
                .push(uri("spiffe://example.org/api"));
        });
        // Cut anywhere: an error, never a panic.
        for end in 0..der.len() {
            assert!(read(&der[..end]).is_err(), "cut at {end}");
        }
        let mut trailing = der.clone();
        trailing.push(0);
        assert_eq!(read(&trailing), Err("it has bytes after its end"));

        let element = |bytes: &[u8]| Reader(bytes).next().map(|(tag, v)| (tag, v.len()));
        assert_eq!(element(&[0x04, 0x01, 0xAA]), Ok((0x04, 1)));
        assert_eq!(element(&[0x04, 0x81, 0x80]), Err(TRUNCATED));
        assert!(element(&[0x04, 0x81, 0x7F]).is_err(), "not minimal");
        assert!(element(&[0x04, 0x82, 0x00, 0x80]).is_err(), "not minimal");
        assert!(element(&[0x04, 0x80, 0x00, 0x00]).is_err(), "indefinite");
        assert!(element(&[0x04, 0x85, 1, 0, 0, 0, 0]).is_err(), "too long");
        assert!(element(&[0x1F, 0x21, 0x00]).is_err(), "high tag number");
        assert!(element(&[0x04, 0xFF]).is_err());
        assert!(element(&[]).is_err());
    }

    #[test]
    fn refuses_doubtful_subject_alt_names() {
        let san = |content: &[u8]| {
            let mut value = vec![SEQUENCE, u8::try_from(content.len()).unwrap()];
            value.extend_from_slice(content);
            CustomExtension::from_oid_content(&[2, 5, 29, 17], value)
        };
        // A second subjectAltName could hide a second SPIFFE ID.
        let two = certificate(|params| {
            params.subject_alt_names = vec![uri("spiffe://example.org/a")];
            params
                .custom_extensions
                .push(san(b"\x86\x16spiffe://example.org/b"));
        });
        assert_eq!(read(&two), Err("it has two subjectAltName extensions"));

        let only = |content: &[u8]| {
            let der = certificate(|params| {
                params.subject_alt_names.clear();
                params.custom_extensions.push(san(content));
            });
            read(&der).map(|fields| fields.uris.join(" "))
        };
        assert_eq!(only(b"\x86\x03a:b\x82\x01x\x86\x03c:d").unwrap(), "a:b c:d");
        assert!(only(b"\x86\x02\xC3\xA9").is_err(), "not IA5String");
        assert!(only(b"\x89\x01x").is_err(), "no such GeneralName");
        assert!(only(b"\x86\x05a:b").is_err(), "truncated name");
        assert_eq!(only(b""), Ok(String::new()));
    }

    #[test]
    fn days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_in_month(2000, 2), 29);
        assert_eq!(days_in_month(2100, 2), 28);
        assert_eq!(days_in_month(2024, 4), 30);
    }
}
