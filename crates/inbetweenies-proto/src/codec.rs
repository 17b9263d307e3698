//! Body codecs: gzip for bodies over 1 KB, and HMAC-SHA256 message signatures.

use std::io::{Read, Write};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::CodecError;

/// Bodies larger than this many bytes are worth compressing.
pub const GZIP_THRESHOLD: usize = 1024;

/// The header that carries a body's HMAC signature (lowercase hex).
pub const SIGNATURE_HEADER: &str = "x-inbetweenies-signature";

/// Whether a body of `len` bytes should be gzipped.
pub fn should_gzip(len: usize) -> bool {
    len > GZIP_THRESHOLD
}

/// Gzips a body.
pub fn gzip_encode(body: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 4 + 64), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default()
}

/// Gunzips a body, refusing to produce more than `limit` bytes.
pub fn gzip_decode(body: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    let mut dec = GzDecoder::new(body).take(limit as u64 + 1);
    dec.read_to_end(&mut out).map_err(CodecError::Gzip)?;
    if out.len() > limit {
        return Err(CodecError::TooLarge { limit });
    }
    Ok(out)
}

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length.
    match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    }
}

/// Signs a body with a shared key: lowercase hex HMAC-SHA256.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    let mut m = mac(key);
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

/// Verifies a hex signature in constant time.
pub fn verify(key: &[u8], body: &[u8], signature_hex: &str) -> Result<(), CodecError> {
    let sig = hex::decode(signature_hex.trim()).map_err(|_| CodecError::BadSignature)?;
    let mut m = mac(key);
    m.update(body);
    m.verify_slice(&sig).map_err(|_| CodecError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_round_trip_and_limit() {
        let body = vec![b'a'; 10_000];
        assert!(should_gzip(body.len()));
        assert!(!should_gzip(1024));
        let z = gzip_encode(&body);
        assert!(z.len() < body.len());
        assert_eq!(gzip_decode(&z, 10_000).unwrap(), body);
        assert!(matches!(
            gzip_decode(&z, 9_999),
            Err(CodecError::TooLarge { .. })
        ));
        assert!(matches!(
            gzip_decode(b"not gzip", 100),
            Err(CodecError::Gzip(_))
        ));
    }

    #[test]
    fn hmac_sign_verify() {
        let sig = sign(b"key", b"body");
        verify(b"key", b"body", &sig).unwrap();
        assert!(verify(b"key", b"body!", &sig).is_err());
        assert!(verify(b"other", b"body", &sig).is_err());
        assert!(verify(b"key", b"body", "zz").is_err());
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
