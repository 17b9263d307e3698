//! Guest QR codes: the guest grant's JSON rendered as a QR code in a PNG.

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

#[cfg(test)]
mod tests {
    use super::*;

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
