//! Guest QR codes: the guest grant's JSON rendered as a QR code in a PNG, and the
//! address a grant names (the server's public host, or the admin's `custom_server`).

use std::net::{Ipv4Addr, Ipv6Addr};

use base64::Engine as _;
use qrcode::{Color, QrCode};

/// Pixels per QR module.
const SCALE: usize = 8;
/// Light modules around the code, as the QR specification asks.
const QUIET_ZONE: usize = 4;

/// Why a QR code could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum QrError {
    #[error("data does not fit in a QR code")]
    Encode(#[from] qrcode::types::QrError),
    #[error("cannot encode the PNG")]
    Png(#[from] png::EncodingError),
}

/// A PNG of the QR code of `data`, base64 encoded (standard alphabet).
pub(crate) fn qr_png_base64(data: &str) -> Result<String, QrError> {
    let code = QrCode::new(data.as_bytes())?;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET_ZONE) * SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, c) in colors.iter().enumerate() {
        if *c != Color::Dark {
            continue;
        }
        let (mx, my) = (i % modules + QUIET_ZONE, i / modules + QUIET_ZONE);
        for y in my * SCALE..(my + 1) * SCALE {
            pixels[y * side + mx * SCALE..y * side + (mx + 1) * SCALE].fill(0);
        }
    }
    let mut png_bytes = Vec::new();
    {
        let side = u32::try_from(side).unwrap_or(u32::MAX);
        let mut enc = png::Encoder::new(&mut png_bytes, side, side);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header()?;
        writer.write_image_data(&pixels)?;
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(png_bytes))
}

/// Longest `custom_server` accepted, in bytes.
pub(crate) const MAX_CUSTOM_SERVER_BYTES: usize = 300;

/// Where a guest is told to connect: `custom_server` read as `host`, `host:port` or
/// `http(s)://host[:port][/]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GuestAddress {
    /// `http` or `https` when the admin wrote a URL.
    pub scheme: Option<&'static str>,
    /// The host as it goes into a URL (an IPv6 address in brackets).
    pub host: String,
    /// The port, when one was written.
    pub port: Option<u16>,
}

impl GuestAddress {
    /// The port a guest connects to: the one written, else the scheme's default for a
    /// URL, else `public_port` (what the reference puts in every QR code).
    pub fn port_or(&self, public_port: u16) -> u16 {
        match (self.port, self.scheme) {
            (Some(p), _) => p,
            (None, Some("https")) => 443,
            (None, Some(_)) => 80,
            (None, None) => public_port,
        }
    }

    /// The base URL a guest uses: the scheme written, else `http` (as the reference's
    /// client builds it from the QR code's `server` and `port`).
    pub fn url(&self, public_port: u16) -> String {
        format!(
            "{}://{}:{}",
            self.scheme.unwrap_or("http"),
            self.host,
            self.port_or(public_port)
        )
    }
}

/// Reads a `custom_server`; `Err` says why it is not a `host[:port]` or an
/// `http(s)://host[:port]` URL.
pub(crate) fn parse_custom_server(input: &str) -> Result<GuestAddress, String> {
    let s = input.trim();
    if s.is_empty() {
        return Err("must name a host".into());
    }
    if s.len() > MAX_CUSTOM_SERVER_BYTES {
        return Err(format!("must be at most {MAX_CUSTOM_SERVER_BYTES} bytes"));
    }
    let (scheme, rest) = match s.split_once("://") {
        Some((sch, rest)) if sch.eq_ignore_ascii_case("http") => (Some("http"), rest),
        Some((sch, rest)) if sch.eq_ignore_ascii_case("https") => (Some("https"), rest),
        Some((sch, _)) => return Err(format!("scheme {sch:?} is not http or https")),
        None => (None, s),
    };
    let authority = match scheme {
        Some(_) => rest.strip_suffix('/').unwrap_or(rest),
        None => rest,
    };
    if authority.contains(['/', '?', '#', '@']) || authority.chars().any(char::is_whitespace) {
        return Err("must be host[:port] or a URL without path, query or user".into());
    }
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let (addr, after) = inner
            .split_once(']')
            .ok_or_else(|| "an IPv6 address needs its closing ']'".to_owned())?;
        addr.parse::<Ipv6Addr>()
            .map_err(|_| format!("{addr:?} is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(parse_port(p.strip_prefix(':').ok_or_else(|| {
                "only ':port' may follow an IPv6 address".to_owned()
            })?)?),
        };
        (format!("[{addr}]"), port)
    } else if authority.matches(':').count() > 1 {
        // A bare IPv6 address: bracketed so that `http://{server}:{port}` stays a URL.
        authority
            .parse::<Ipv6Addr>()
            .map_err(|_| format!("{authority:?} is not an IPv6 address (write [addr]:port)"))?;
        (format!("[{authority}]"), None)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(parse_port(p)?)),
            None => (authority, None),
        };
        check_host_name(host)?;
        (host.to_ascii_lowercase(), port)
    };
    Ok(GuestAddress { scheme, host, port })
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!("port {p:?} is not a number from 1 to 65535")),
    }
}

/// An IPv4 address or a DNS name (labels of letters, digits and inner hyphens).
fn check_host_name(host: &str) -> Result<(), String> {
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let all_digits = name.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if name.is_empty() || name.len() > 253 || all_digits || !name.split('.').all(label_ok) {
        return Err(format!("{host:?} is not a host name or an IP address"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_servers_that_are_addresses() {
        let p = |s: &str| parse_custom_server(s).unwrap();
        assert_eq!(
            p("127.0.0.1"),
            GuestAddress {
                scheme: None,
                host: "127.0.0.1".into(),
                port: None
            }
        );
        assert_eq!(p("127.0.0.1").url(8000), "http://127.0.0.1:8000");
        assert_eq!(
            p("Home.Example.org:9000").url(8000),
            "http://home.example.org:9000"
        );
        assert_eq!(
            p("https://home.example.org").url(8000),
            "https://home.example.org:443"
        );
        assert_eq!(p("HTTP://gibbon:81/").url(8000), "http://gibbon:81");
        assert_eq!(p("[::1]:8443").url(1), "http://[::1]:8443");
        assert_eq!(p("::1").host, "[::1]");
        assert_eq!(p("  funkygibbon.local  ").port_or(18765), 18765);
    }

    #[test]
    fn custom_servers_that_are_not() {
        for bad in [
            "",
            "   ",
            "ftp://host",
            "http://",
            "host:0",
            "host:65536",
            "host:+80",
            "host:",
            "host:80:90",
            "http://host/path",
            "http://user@host",
            "host?x=1",
            "-host",
            "ho_st",
            "a..b",
            "999.1.1.1",
            "[::1",
            "[nope]:80",
            "[::1]80",
            "white space",
            "héllo",
        ] {
            assert!(parse_custom_server(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse_custom_server(&"a".repeat(MAX_CUSTOM_SERVER_BYTES + 1)).is_err());
        assert!(parse_custom_server(&format!("{}.b", "a".repeat(64))).is_err());
    }

    #[test]
    fn makes_a_png() {
        let b64 = qr_png_base64(r#"{"type":"guest_access"}"#).unwrap();
        assert!(b64.starts_with("iVBORw0KGgo"), "{b64}");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let dec = png::Decoder::new(bytes.as_slice());
        let reader = dec.read_info().unwrap();
        let info = reader.info();
        assert_eq!(info.width, info.height);
        assert_eq!(info.width as usize % SCALE, 0);
    }
}
