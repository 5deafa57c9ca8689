//! Image files decoded into buffers that each thread keeps: JPEG with zune-jpeg straight into
//! the buffer (the image crate's own JPEG decoder, without its copies), other formats through
//! the image crate.

use super::pixels::Bytes;
use anyhow::{Context, Result, bail};
use std::cell::Cell;
use std::io::Read;
use std::path::Path;
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;

/// A decoded image: interleaved bytes with 1 or 3 channels, and the file it came from.
#[derive(Default)]
pub struct Decoded {
    file: Vec<u8>,
    pixels: Vec<u8>,
    width: usize,
    height: usize,
    channels: usize,
}

impl Decoded {
    pub fn bytes(&self) -> Bytes<'_> {
        Bytes { data: &self.pixels, width: self.width, height: self.height, channels: self.channels }
    }

    /// Reads and decodes `path`, reusing this value's memory, refusing an image of more than
    /// `max_pixels` pixels before its pixels are allocated; errors name the file.
    pub fn read(&mut self, path: &Path, max_pixels: u64) -> Result<()> {
        self.file.clear();
        let mut file = crate::files::open(path)?;
        // No image of `max_pixels` pixels needs more bytes than 8 per pixel (RGBA, 16 bits).
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len > max_pixels.saturating_mul(8).saturating_add(1 << 20) {
            bail!("{}: {len} bytes, more than an image within data.max_pixels = {max_pixels} needs", path.display());
        }
        file.read_to_end(&mut self.file).with_context(|| format!("reading {}", path.display()))?;
        self.decode(max_pixels).with_context(|| format!("{}: cannot decode the image", path.display()))
    }

    fn decode(&mut self, max_pixels: u64) -> Result<()> {
        if self.file.starts_with(&[0xff, 0xd8]) {
            return self.decode_jpeg(max_pixels);
        }
        let reader = || image::ImageReader::new(std::io::Cursor::new(&self.file[..])).with_guessed_format();
        let (w, h) = reader()?.into_dimensions()?;
        within(w as u64, h as u64, max_pixels)?;
        let mut limits = image::Limits::default();
        limits.max_alloc = Some(max_pixels.saturating_mul(8).max(1 << 26));
        let mut reader = reader()?;
        reader.limits(limits);
        let img = reader.decode()?;
        let gray = !img.color().has_color();
        let (width, height) = (img.width() as usize, img.height() as usize);
        self.pixels.clear();
        match gray {
            true => self.pixels.extend_from_slice(img.into_luma8().as_raw()),
            false => self.pixels.extend_from_slice(img.into_rgb8().as_raw()),
        }
        (self.width, self.height, self.channels) = (width, height, if gray { 1 } else { 3 });
        Ok(())
    }

    /// With the options the image crate gives zune-jpeg, so that the pixels are the same.
    fn decode_jpeg(&mut self, max_pixels: u64) -> Result<()> {
        let options = DecoderOptions::default().set_strict_mode(false).set_max_width(usize::MAX).set_max_height(usize::MAX);
        let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(&self.file[..]), options);
        decoder.decode_headers()?;
        let input = decoder.input_colorspace().context("no colour space after the headers")?;
        let out = match input {
            ColorSpace::Luma | ColorSpace::LumaA => ColorSpace::Luma,
            _ => ColorSpace::RGB,
        };
        decoder.set_options(decoder.options().jpeg_set_out_colorspace(out));
        let (width, height) = decoder.dimensions().context("no dimensions after the headers")?;
        within(width as u64, height as u64, max_pixels)?;
        let size = decoder.output_buffer_size().context("image too large")?;
        self.pixels.resize(size, 0);
        decoder.decode_into(&mut self.pixels)?;
        (self.width, self.height, self.channels) = (width, height, out.num_components());
        Ok(())
    }
}

/// The default of `data.max_pixels`: the size beyond which PIL's `Image.open` refuses a file as a
/// decompression bomb (twice its `MAX_IMAGE_PIXELS`, 89,478,485).
pub const MAX_PIXELS: u64 = 178_956_970;

fn within(width: u64, height: u64, max_pixels: u64) -> Result<()> {
    if width * height > max_pixels {
        bail!(
            "its header says {width}×{height} = {} pixels, more than data.max_pixels = {max_pixels} \
             (a decompression bomb, or a picture to shrink first; raise data.max_pixels to read it)",
            width * height
        );
    }
    Ok(())
}

thread_local! {
    static DECODED: Cell<Decoded> = Cell::default();
}

/// Runs `f` on the decoded `path`, decoded into this thread's buffer (at most `max_pixels`).
pub fn with_file<R>(path: &Path, max_pixels: u64, f: impl FnOnce(Bytes<'_>) -> R) -> Result<R> {
    let mut d = DECODED.take();
    let r = d.read(path, max_pixels).map(|()| f(d.bytes()));
    DECODED.set(d);
    r
}
