//! ResNet-18/34/50 encoders, laid out so that module paths match torchvision's state-dict keys.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::tensor::{Device, Tensor};
// Convolution and BatchNorm(+ReLU) run through barlow's CPU kernels (burn's ops on other backends).
use crate::ops::add_relu;
use crate::ops::modules::{batch_norm, conv2d};
use crate::ops::precision;
use serde::{Deserialize, Serialize};

/// Which ResNet: depth decides the block type and how many blocks each stage holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Resnet18,
    Resnet34,
    Resnet50,
}

impl Arch {
    fn blocks(self) -> [usize; 4] {
        match self {
            Arch::Resnet18 => [2, 2, 2, 2],
            Arch::Resnet34 | Arch::Resnet50 => [3, 4, 6, 3],
        }
    }

    fn expansion(self) -> usize {
        match self {
            Arch::Resnet50 => 4,
            _ => 1,
        }
    }
}

impl std::str::FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "resnet18" => Ok(Arch::Resnet18),
            "resnet34" => Ok(Arch::Resnet34),
            "resnet50" => Ok(Arch::Resnet50),
            _ => Err(format!("unknown architecture `{s}` (expected resnet18, resnet34 or resnet50)")),
        }
    }
}

/// The stem: ImageNet's 7×7 stride-2 convolution and max-pool, or the 3×3 stride-1 convolution
/// without max-pool that small (32×32) images need — padded by 1 (`cifar`, the usual CIFAR
/// ResNet) or by 2 (`cifar-pad2`, solo-learn's: 34×34 maps after it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stem {
    Imagenet,
    Cifar,
    #[serde(rename = "cifar-pad2")]
    CifarPad2,
}

impl std::str::FromStr for Stem {
    type Err = String;
    fn from_str(s: &str) -> Result<Stem, String> {
        match s {
            "imagenet" => Ok(Stem::Imagenet),
            "cifar" => Ok(Stem::Cifar),
            "cifar-pad2" => Ok(Stem::CifarPad2),
            other => Err(format!("unknown stem `{other}`: imagenet, cifar or cifar-pad2")),
        }
    }
}

#[derive(Config, Debug)]
pub struct ResNetConfig {
    pub arch: Arch,
    #[config(default = "Stem::Imagenet")]
    pub stem: Stem,
    /// Channels of the first stage (64 in the paper); smaller widths make CPU runs affordable.
    #[config(default = 64)]
    pub width: usize,
    /// Classes of the final `fc` layer; `None` for an encoder that ends at the pooled features.
    #[config(default = "None")]
    pub num_classes: Option<usize>,
    /// Start every residual branch's last BN at γ = 0, as the official code does
    /// (`torchvision.models.resnet50(zero_init_residual=True)`).
    #[config(default = true)]
    pub zero_init_residual: bool,
}

/// A torchvision-style ResNet. `fc` is present only when classes are asked for.
#[derive(Module, Debug)]
pub struct ResNet {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub maxpool: Option<MaxPool2d>,
    pub layer1: Vec<Block>,
    pub layer2: Vec<Block>,
    pub layer3: Vec<Block>,
    pub layer4: Vec<Block>,
    pub avgpool: AdaptiveAvgPool2d,
    pub fc: Option<Linear>,
}

/// A residual block: `BasicBlock` (conv1, conv2) or `Bottleneck` (conv1, conv2, conv3).
#[derive(Module, Debug)]
pub struct Block {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub conv3: Option<Conv2d>,
    pub bn3: Option<BatchNorm>,
    /// torchvision's `nn.Sequential(conv1x1, bn)`: a tuple keeps its keys `downsample.0` / `.1`.
    pub downsample: Option<(Conv2d, BatchNorm)>,
}

fn conv(c_in: usize, c_out: usize, k: usize, stride: usize, device: &Device) -> Conv2d {
    padded_conv(c_in, c_out, k, stride, k / 2, device)
}

fn padded_conv(c_in: usize, c_out: usize, k: usize, stride: usize, p: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([c_in, c_out], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(false)
        // torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu").
        .with_initializer(Initializer::KaimingNormal { gain: 2f64.sqrt(), fan_out_only: true })
        .init(device)
}

fn bn(c: usize, zero: bool, device: &Device) -> BatchNorm {
    let mut bn = BatchNormConfig::new(c).init(device);
    if zero {
        bn.gamma = Initializer::Zeros.init([c], device);
    }
    bn
}

impl Block {
    fn new(arch: Arch, c_in: usize, planes: usize, stride: usize, zero: bool, device: &Device) -> Self {
        let c_out = planes * arch.expansion();
        let downsample = (stride != 1 || c_in != c_out)
            .then(|| (conv(c_in, c_out, 1, stride, device), bn(c_out, false, device)));
        match arch {
            // torchvision's Bottleneck (ResNet v1.5) strides in the 3×3 convolution.
            Arch::Resnet50 => Block {
                conv1: conv(c_in, planes, 1, 1, device),
                bn1: bn(planes, false, device),
                conv2: conv(planes, planes, 3, stride, device),
                bn2: bn(planes, false, device),
                conv3: Some(conv(planes, c_out, 1, 1, device)),
                bn3: Some(bn(c_out, zero, device)),
                downsample,
            },
            _ => Block {
                conv1: conv(c_in, planes, 3, stride, device),
                bn1: bn(planes, false, device),
                conv2: conv(planes, planes, 3, 1, device),
                bn2: bn(planes, zero, device),
                conv3: None,
                bn3: None,
                downsample,
            },
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = match &self.downsample {
            Some((conv, bn)) => batch_norm(bn, conv2d(conv, x.clone()), false),
            None => x.clone(),
        };
        let bottleneck = self.conv3.is_some();
        let mut out = batch_norm(&self.bn1, conv2d(&self.conv1, x), true);
        out = batch_norm(&self.bn2, conv2d(&self.conv2, out), bottleneck);
        if let (Some(conv3), Some(bn3)) = (&self.conv3, &self.bn3) {
            out = batch_norm(bn3, conv2d(conv3, out), false);
        }
        add_relu(out, identity)
    }
}

impl ResNetConfig {
    pub fn init(&self, device: &Device) -> ResNet {
        let w = self.width;
        let (conv1, maxpool) = match self.stem {
            Stem::Imagenet => (
                conv(3, w, 7, 2, device),
                Some(
                    MaxPool2dConfig::new([3, 3])
                        .with_strides([2, 2])
                        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                        .init(),
                ),
            ),
            Stem::Cifar => (conv(3, w, 3, 1, device), None),
            Stem::CifarPad2 => (padded_conv(3, w, 3, 1, 2, device), None),
        };
        let mut c_in = w;
        let mut stage = |i: usize, n: usize| {
            let planes = w << i;
            let stride = if i == 0 { 1 } else { 2 };
            (0..n)
                .map(|b| {
                    let block = Block::new(
                        self.arch,
                        c_in,
                        planes,
                        if b == 0 { stride } else { 1 },
                        self.zero_init_residual,
                        device,
                    );
                    c_in = planes * self.arch.expansion();
                    block
                })
                .collect::<Vec<_>>()
        };
        let [n1, n2, n3, n4] = self.arch.blocks();
        let (layer1, layer2, layer3, layer4) = (stage(0, n1), stage(1, n2), stage(2, n3), stage(3, n4));
        let fc = self
            .num_classes
            .map(|k| LinearConfig::new(self.feature_dim(), k).init(device));
        ResNet {
            conv1,
            bn1: bn(w, false, device),
            maxpool,
            layer1,
            layer2,
            layer3,
            layer4,
            avgpool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc,
        }
    }

    /// Bytes the stem's outputs (convolution, batch norm, ReLU) of `images` images of `size`²
    /// pixels hold while a training step keeps them for its backward pass: a floor under the
    /// step's memory, which the later stages only add to.
    pub fn stem_bytes(&self, images: usize, size: usize) -> u128 {
        let side = match self.stem {
            Stem::Imagenet => size.div_ceil(2),
            Stem::Cifar => size,
            Stem::CifarPad2 => size + 2,
        } as u128;
        3 * 4 * images as u128 * self.width as u128 * side * side
    }

    /// Width of the pooled features (2048 for ResNet-50, 512 for ResNet-18 at width 64).
    pub fn feature_dim(&self) -> usize {
        8 * self.width * self.arch.expansion()
    }
}

impl ResNet {
    /// Pooled features `N×F` (or logits when `fc` is present) of images `N×3×H×W`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = batch_norm(&self.bn1, conv2d(&self.conv1, precision::input_layout(images)), true);
        if let Some(pool) = &self.maxpool {
            x = pool.forward(x);
        }
        for block in self.layer1.iter().chain(&self.layer2).chain(&self.layer3).chain(&self.layer4) {
            x = block.forward(x);
        }
        // Activations may still be bfloat16 here (precision::activation); features are f32.
        let features: Tensor<2> = precision::result(self.avgpool.forward(x).flatten(1, 3));
        match &self.fc {
            Some(fc) => fc.forward(features),
            None => features,
        }
    }
}
