//! PROXY protocol v1 (text) and v2 (binary) headers, as HAProxy and nginx send them ahead of
//! the client's bytes, so a broker behind a proxy still sees the real client address.
//!
//! [`parse`] is pure: it looks at the bytes read so far and says how many more it needs, or
//! what the header says and how long it is. [`read_header`] drives it over a socket reading
//! exactly as many bytes as it asks for, so nothing past the header (the TLS ClientHello, the
//! WebSocket request, the MQTT CONNECT) is consumed. The format is the one of
//! <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>; TLVs of v2 are skipped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The v2 signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 line is at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;
/// Fewer bytes than any header: safe to read before knowing which version it is ("PROXY
/// UNKNOWN\r\n" is 15 bytes, a v2 header at least 16).
const PREFIX: usize = 12;

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProxyHeader {
    /// The client's address, or `None` when the proxy speaks for itself (v2 `LOCAL`, e.g. a
    /// health check) or the address family is not TCP over IP (v1 `UNKNOWN`, v2 `UNSPEC`,
    /// UDP, unix sockets).
    pub(crate) source: Option<SocketAddr>,
}

/// The outcome of looking at the first bytes of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// More bytes are needed: have at least this many in all before calling again.
    Incomplete(usize),
    /// A whole header of `len` bytes.
    Complete(ProxyHeader, usize),
}

/// Why a connection's first bytes are not a PROXY header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ProxyError {
    /// Neither the v1 `PROXY ` prefix nor the v2 signature.
    #[error("no PROXY protocol header")]
    Missing,
    /// A v1 line that is too long or malformed.
    #[error("malformed PROXY v1 header: {0}")]
    V1(&'static str),
    /// A v2 header with a bad version, command or length.
    #[error("malformed PROXY v2 header: {0}")]
    V2(&'static str),
}

/// Looks at the bytes read so far.
pub(crate) fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let n = buf.len().min(PREFIX);
    let v1 = b"PROXY ".get(..n.min(6)) == buf.get(..n.min(6));
    let v2 = V2_SIGNATURE[..n] == buf[..n];
    match (v1, v2) {
        (false, false) => Err(ProxyError::Missing),
        _ if buf.len() < PREFIX => Ok(Parsed::Incomplete(PREFIX)),
        (true, _) => parse_v1(buf),
        (false, true) => parse_v2(buf),
    }
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= V1_MAX {
            return Err(ProxyError::V1("no CRLF within 107 bytes"));
        }
        // The line ends somewhere ahead: one byte at a time, so as not to read past it.
        return Ok(Parsed::Incomplete(buf.len() + 1));
    };
    let len = end + 2;
    if len > V1_MAX {
        return Err(ProxyError::V1("longer than 107 bytes"));
    }
    let line = std::str::from_utf8(&buf[6..end]).map_err(|_| ProxyError::V1("not ASCII"))?;
    let mut fields = line.split(' ');
    let source = match fields.next() {
        Some("UNKNOWN") => None,
        Some(family @ ("TCP4" | "TCP6")) => {
            let mut next = || fields.next().ok_or(ProxyError::V1("missing field"));
            let src: IpAddr = next()?
                .parse()
                .map_err(|_| ProxyError::V1("bad source address"))?;
            let _dst: IpAddr = next()?
                .parse()
                .map_err(|_| ProxyError::V1("bad destination address"))?;
            let sport = port(next()?)?;
            let _dport = port(next()?)?;
            if fields.next().is_some() {
                return Err(ProxyError::V1("extra fields"));
            }
            if (family == "TCP4") != src.is_ipv4() {
                return Err(ProxyError::V1("address does not match the family"));
            }
            Some(SocketAddr::new(src, sport))
        }
        _ => return Err(ProxyError::V1("unknown protocol family")),
    };
    Ok(Parsed::Complete(ProxyHeader { source }, len))
}

/// A v1 port: decimal 0..=65535 without a sign or leading zeros.
fn port(s: &str) -> Result<u16, ProxyError> {
    let ok =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    ok.then(|| s.parse().ok())
        .flatten()
        .ok_or(ProxyError::V1("bad port"))
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    if buf.len() < 16 {
        return Ok(Parsed::Incomplete(16));
    }
    let (ver_cmd, family) = (buf[12], buf[13]);
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::V2("version is not 2"));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(ProxyError::V2("unknown command")),
    };
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if buf.len() < len {
        return Ok(Parsed::Incomplete(len));
    }
    let body = &buf[16..len];
    let source = match family {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 => {
            let a = body
                .get(..12)
                .ok_or(ProxyError::V2("short IPv4 addresses"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
        }
        // TCP over IPv6.
        0x21 => {
            let a = body
                .get(..36)
                .ok_or(ProxyError::V2("short IPv6 addresses"))?;
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&a[..16]);
            let ip = Ipv6Addr::from(ip);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[32], a[33]]),
            ))
        }
        // UNSPEC, UDP, unix sockets: nothing we can use as a client address.
        0x00 | 0x12 | 0x22 | 0x31 | 0x32 => None,
        _ => return Err(ProxyError::V2("unknown address family")),
    };
    Ok(Parsed::Complete(
        ProxyHeader {
            source: if local { None } else { source },
        },
        len,
    ))
}

/// Reads a PROXY header from `io`, consuming exactly its bytes.
pub(crate) async fn read_header<S: AsyncRead + Unpin>(
    io: &mut S,
) -> std::io::Result<Result<ProxyHeader, ProxyError>> {
    let mut buf = Vec::with_capacity(64);
    loop {
        match parse(&buf) {
            Ok(Parsed::Complete(header, _)) => return Ok(Ok(header)),
            Ok(Parsed::Incomplete(need)) => {
                let have = buf.len();
                buf.resize(need, 0);
                io.read_exact(&mut buf[have..]).await?;
            }
            Err(e) => return Ok(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn complete(buf: &[u8]) -> (Option<SocketAddr>, usize) {
        match parse(buf) {
            Ok(Parsed::Complete(h, len)) => (h.source, len),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn v1_tcp4_and_tcp6_give_the_source_address() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 1883\r\nMQTT...";
        assert_eq!(
            complete(line),
            (Some("203.0.113.7:51234".parse().unwrap()), 44)
        );
        let line = b"PROXY TCP6 2001:db8::1 ::1 4000 8883\r\n";
        assert_eq!(
            complete(line),
            (Some("[2001:db8::1]:4000".parse().unwrap()), line.len())
        );
        assert_eq!(complete(b"PROXY UNKNOWN\r\n"), (None, 15));
        assert_eq!(
            complete(b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n").0,
            None,
            "UNKNOWN ignores the rest of the line"
        );
    }

    #[test]
    fn v1_is_read_one_byte_at_a_time_after_the_prefix() {
        let line = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";
        assert_eq!(parse(&line[..3]), Ok(Parsed::Incomplete(12)));
        assert_eq!(parse(&line[..12]), Ok(Parsed::Incomplete(13)));
        assert_eq!(
            parse(&line[..line.len() - 1]),
            Ok(Parsed::Incomplete(line.len()))
        );
    }

    #[test]
    fn malformed_v1_lines_are_refused() {
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(ProxyError::V1(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"PROXY ".as_slice(), &[b'x'; 101]].concat();
        assert!(matches!(parse(&long), Err(ProxyError::V1(_))));
    }

    fn v2(cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | cmd);
        h.push(family);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn v2_proxy_commands_give_the_source_address_and_skip_tlvs() {
        // 198.51.100.9:40000 -> 10.0.0.1:1883, then a TLV (type 0x04 NOOP, length 3).
        let body = [
            198, 51, 100, 9, 10, 0, 0, 1, 0x9c, 0x40, 0x07, 0x5b, 0x04, 0, 3, 0, 0, 0,
        ];
        let h = v2(1, 0x11, &body);
        let with_mqtt = [h.as_slice(), &[0x10, 0x0c]].concat();
        assert_eq!(
            complete(&with_mqtt),
            (Some("198.51.100.9:40000".parse().unwrap()), h.len())
        );
        let mut body = vec![0u8; 36];
        body[15] = 1; // ::1
        body[31] = 1;
        body[32..34].copy_from_slice(&5000u16.to_be_bytes());
        assert_eq!(
            complete(&v2(1, 0x21, &body)).0,
            Some("[::1]:5000".parse().unwrap())
        );
    }

    #[test]
    fn v2_local_and_non_ip_families_have_no_source() {
        assert_eq!(complete(&v2(0, 0x00, &[])), (None, 16));
        assert_eq!(
            complete(&v2(0, 0x11, &[1; 12])).0,
            None,
            "LOCAL ignores addresses"
        );
        assert_eq!(complete(&v2(1, 0x31, &[0; 216])).0, None, "unix socket");
    }

    #[test]
    fn v2_asks_for_exactly_the_header_length() {
        let h = v2(1, 0x11, &[1; 12]);
        assert_eq!(parse(&h[..12]), Ok(Parsed::Incomplete(16)));
        assert_eq!(parse(&h[..16]), Ok(Parsed::Incomplete(28)));
        assert_eq!(parse(&h[..27]), Ok(Parsed::Incomplete(28)));
    }

    #[test]
    fn malformed_v2_headers_are_refused() {
        let mut bad_version = v2(1, 0x11, &[1; 12]);
        bad_version[12] = 0x11;
        assert!(matches!(parse(&bad_version), Err(ProxyError::V2(_))));
        assert!(matches!(
            parse(&v2(2, 0x11, &[1; 12])),
            Err(ProxyError::V2(_))
        ));
        assert!(matches!(
            parse(&v2(1, 0x11, &[1; 8])),
            Err(ProxyError::V2(_))
        ));
        assert!(matches!(
            parse(&v2(1, 0x21, &[1; 12])),
            Err(ProxyError::V2(_))
        ));
        assert!(matches!(
            parse(&v2(1, 0x51, &[1; 12])),
            Err(ProxyError::V2(_))
        ));
    }

    #[test]
    fn anything_else_is_missing_a_header_from_the_first_byte() {
        // An MQTT CONNECT, a TLS ClientHello, an HTTP request.
        assert_eq!(parse(&[0x10]), Err(ProxyError::Missing));
        assert_eq!(parse(&[0x16, 0x03, 0x01]), Err(ProxyError::Missing));
        assert_eq!(parse(b"GET /mqtt HTTP/1.1\r\n"), Err(ProxyError::Missing));
        assert_eq!(parse(b""), Ok(Parsed::Incomplete(12)));
    }

    #[tokio::test]
    async fn reader_consumes_exactly_the_header() {
        for header in [
            b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 1883\r\n".to_vec(),
            v2(
                1,
                0x11,
                &[203, 0, 113, 7, 10, 0, 0, 1, 0xc8, 0x22, 0x07, 0x5b],
            ),
        ] {
            let stream = [header.as_slice(), b"\x10rest"].concat();
            let mut io = stream.as_slice();
            let h = read_header(&mut io).await.unwrap().unwrap();
            assert_eq!(h.source, Some("203.0.113.7:51234".parse().unwrap()));
            assert_eq!(io, b"\x10rest");
        }
        let mut short: &[u8] = b"PROXY TCP4 1.2";
        assert!(
            read_header(&mut short).await.is_err(),
            "EOF inside the header"
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_and_never_ask_for_less(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Parsed::Incomplete(need)) = parse(&bytes) {
                prop_assert!(need > bytes.len());
            }
            if let Ok(Parsed::Complete(_, len)) = parse(&bytes) {
                prop_assert!(len <= bytes.len());
            }
        }

        #[test]
        fn random_bytes_after_a_valid_prefix_never_panic(
            v1 in any::<bool>(),
            tail in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let prefix: &[u8] = if v1 { b"PROXY " } else { &V2_SIGNATURE };
            let bytes = [prefix, &tail].concat();
            let _ = parse(&bytes);
        }
    }
}
