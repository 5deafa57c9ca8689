//! Image files decoded into buffers that each thread keeps: JPEG with zune-jpeg straight into
//! the buffer (the image crate's own JPEG decoder, without its copies), other formats through
//! the image crate.

use super::views::Bytes;
use anyhow::{Context, Result};
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

    /// Reads and decodes `path`, reusing this value's memory; errors name the file.
    pub fn read(&mut self, path: &Path) -> Result<()> {
        self.file.clear();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut self.file))
            .with_context(|| format!("reading {}", path.display()))?;
        self.decode().with_context(|| format!("{}: cannot decode the image", path.display()))
    }

    fn decode(&mut self) -> Result<()> {
        if self.file.starts_with(&[0xff, 0xd8]) {
            return self.decode_jpeg();
        }
        let img = image::load_from_memory(&self.file)?;
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
    fn decode_jpeg(&mut self) -> Result<()> {
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
        let size = decoder.output_buffer_size().context("image too large")?;
        self.pixels.resize(size, 0);
        decoder.decode_into(&mut self.pixels)?;
        (self.width, self.height, self.channels) = (width, height, out.num_components());
        Ok(())
    }
}

thread_local! {
    static DECODED: Cell<Decoded> = Cell::default();
}

/// Runs `f` on the decoded `path`, decoded into this thread's buffer.
pub fn with_file<R>(path: &Path, f: impl FnOnce(Bytes<'_>) -> R) -> Result<R> {
    let mut d = DECODED.take();
    let r = d.read(path).map(|()| f(d.bytes()));
    DECODED.set(d);
    r
}
