//! Images in memory: decoded RGB images, borrowed byte images, and the pixel access that the
//! augmentations share.

/// An RGB image, `height × width × 3` values in [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<f32>,
}

impl Image {
    /// From interleaved bytes with 1 (gray, repeated to RGB) or 3 channels.
    pub fn from_bytes(bytes: &[u8], width: usize, height: usize, channels: usize) -> Image {
        let pixels = match channels {
            1 => bytes.iter().flat_map(|&v| [v.unit(); 3]).collect(),
            _ => bytes.iter().map(|&v| v.unit()).collect(),
        };
        Image { width, height, pixels }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.pixels.iter().map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect()
    }
}

/// Interleaved 8-bit pixels as decoded, 1 (gray) or 3 (RGB) channels, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct Bytes<'a> {
    pub data: &'a [u8],
    pub width: usize,
    pub height: usize,
    pub channels: usize,
}

/// A value of an interleaved image, read as a float in [0, 1].
pub trait Texel: Copy + Sync {
    fn unit(self) -> f32;
}

impl Texel for u8 {
    fn unit(self) -> f32 {
        UNIT[self as usize]
    }
}

/// `v / 255` for every byte: a load instead of a division.
static UNIT: [f32; 256] = {
    let mut t = [0f32; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i as f32 / 255.0;
        i += 1;
    }
    t
};

impl Texel for f32 {
    fn unit(self) -> f32 {
        self
    }
}

/// What views are made from: interleaved pixels with 1 (gray) or 3 channels.
pub trait Pixels: Sync {
    type Texel: Texel;
    fn width(&self) -> usize;
    fn height(&self) -> usize;
    fn channels(&self) -> usize;
    fn data(&self) -> &[Self::Texel];
}

impl Pixels for Image {
    type Texel = f32;
    fn width(&self) -> usize {
        self.width
    }
    fn height(&self) -> usize {
        self.height
    }
    fn channels(&self) -> usize {
        3
    }
    fn data(&self) -> &[f32] {
        &self.pixels
    }
}

impl Pixels for Bytes<'_> {
    type Texel = u8;
    fn width(&self) -> usize {
        self.width
    }
    fn height(&self) -> usize {
        self.height
    }
    fn channels(&self) -> usize {
        self.channels
    }
    fn data(&self) -> &[u8] {
        self.data
    }
}

/// Luma as PIL and torchvision compute it.
pub fn luma([r, g, b]: [f32; 3]) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

/// The image's channel planes (`3 × H × W`).
pub(crate) fn planar(img: &Image) -> Vec<f32> {
    let plane = img.width * img.height;
    let mut out = vec![0f32; 3 * plane];
    for (i, p) in img.pixels.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = p[c];
        }
    }
    out
}

/// Channel planes back to an interleaved image.
pub(crate) fn interleave(planes: &[f32], width: usize, height: usize) -> Image {
    let plane = width * height;
    let pixels = (0..plane).flat_map(|i| [planes[i], planes[plane + i], planes[2 * plane + i]]).collect();
    Image { width, height, pixels }
}
