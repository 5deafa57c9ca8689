//! `barlow bench ops`: where a training step's time goes, operation by operation — burn's CPU
//! ops against ours on the exact layer shapes of the step (PyTorch: `scripts/torch_ops.py`).

use crate::ops::conv::ConvShape;
use crate::ops::Kernels;
use crate::config::range::COUNT;
use crate::config::range::LAYER;
use crate::config::valid::{BATCH, SIZE, WIDTH};
use crate::model::{Arch, ResNetConfig, Stem};
use anyhow::{Result, bail};
use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::backend::ops::{ActivationOps, ConvOptions, ModuleOps};
use burn::tensor::TensorData;
use std::time::Instant;

#[derive(clap::Args, Debug, Clone)]
pub struct OpsArgs {
    /// Implementations to time: `burn` (burn-flex's own ops) and/or `barlow` (src/ops).
    #[arg(long, value_delimiter = ',', default_value = "burn,barlow")]
    pub implementation: Vec<String>,
    #[arg(long, default_value = "resnet18")]
    pub arch: Arch,
    #[arg(long, default_value_t = 64, value_parser = WIDTH.parser::<usize>())]
    pub width: usize,
    /// Images per view (N).
    #[arg(long, default_value_t = 128, value_parser = BATCH.parser::<usize>())]
    pub batch: usize,
    #[arg(long, default_value_t = 32, value_parser = SIZE.parser::<usize>())]
    pub size: usize,
    /// Widths of the projector's BatchNorm layers (all but the last projector width).
    #[arg(long, value_delimiter = '-', default_value = "2048-2048", value_parser = LAYER.parser::<usize>())]
    pub projector_bn: Vec<usize>,
    /// Timed repetitions of each operation (the fastest counts).
    #[arg(long, default_value_t = 3, value_parser = COUNT.parser::<usize>())]
    pub reps: usize,
    /// Print the layer list as JSON (the input of scripts/torch_ops.py) instead of timing.
    #[arg(long)]
    pub list: bool,
    /// Count the process's CPU time instead of wall-clock time: with one thread
    /// (RAYON_NUM_THREADS=1) this measures the kernels even while other jobs load the machine.
    #[arg(long)]
    pub cpu_time: bool,
    /// Also print each layer's times.
    #[arg(long)]
    pub per_layer: bool,
}

/// One layer of the step: a convolution (followed by its BatchNorm), or a lone BatchNorm.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Layer {
    pub name: String,
    /// `None` for the projector's BatchNorm1d layers.
    pub conv: Option<ConvLayer>,
    /// BatchNorm input shape.
    pub bn: Vec<usize>,
    /// Whether a ReLU follows the BatchNorm directly (ours fuses it).
    pub relu: bool,
    /// Whether the step needs the input gradient (not for the first layer: images are constants).
    pub input_grad: bool,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ConvLayer {
    pub x: [usize; 4],
    pub weight: [usize; 4],
    pub stride: usize,
    pub padding: usize,
}

/// The convolutions and BatchNorms of one view's forward pass, in order.
pub fn layers(arch: Arch, width: usize, batch: usize, size: usize, projector_bn: &[usize]) -> Vec<Layer> {
    let stem = if size <= 64 { Stem::Cifar } else { Stem::Imagenet };
    let config = ResNetConfig::new(arch).with_stem(stem).with_width(width);
    let net = config.init(&burn::tensor::Device::flex());
    let mut out = vec![];
    let mut push = |name: String, x: [usize; 4], conv: &burn::nn::conv::Conv2d, relu: bool, input_grad: bool| -> [usize; 4] {
        let [co, ci, kh, _] = conv.weight.dims();
        let (s, p) = (conv.stride[0], kh / 2);
        let shape = ConvShape { n: x[0], c_in: ci, h: x[2], w: x[3], c_out: co, kh, kw: kh, stride: [s, s], padding: [(p, p); 2], dilation: [1, 1] };
        let y = [x[0], co, shape.out_h(), shape.out_w()];
        out.push(Layer { name, conv: Some(ConvLayer { x, weight: conv.weight.dims(), stride: s, padding: p }), bn: y.to_vec(), relu, input_grad });
        y
    };
    let mut x = push("conv1".into(), [batch, 3, size, size], &net.conv1, true, false);
    if net.maxpool.is_some() {
        x = [x[0], x[1], (x[2] - 1) / 2 + 1, (x[3] - 1) / 2 + 1];
    }
    for (stage, blocks) in [&net.layer1, &net.layer2, &net.layer3, &net.layer4].into_iter().enumerate() {
        for (b, block) in blocks.iter().enumerate() {
            let name = |part: &str| format!("layer{}.{b}.{part}", stage + 1);
            let last = block.conv3.is_some();
            let mut y = push(name("conv1"), x, &block.conv1, true, true);
            y = push(name("conv2"), y, &block.conv2, !last, true);
            if let Some(conv3) = &block.conv3 {
                y = push(name("conv3"), y, conv3, false, true);
            }
            if let Some((conv, _)) = &block.downsample {
                push(name("downsample"), x, conv, false, true);
            }
            x = y;
        }
    }
    for (i, &d) in projector_bn.iter().enumerate() {
        out.push(Layer { name: format!("projector.{i}"), conv: None, bn: vec![batch, d], relu: true, input_grad: true });
    }
    out
}

fn random(shape: &[usize], seed: u64) -> FlexTensor {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let values: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect();
    FlexTensor::from_data(TensorData::new(values, shape.to_vec()))
}

static CPU_TIME: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The fastest of `reps` runs of `f`, in seconds (wall clock, or CPU time with `--cpu-time`).
fn time<T>(reps: usize, mut f: impl FnMut() -> T) -> f64 {
    let cpu = CPU_TIME.load(std::sync::atomic::Ordering::Relaxed);
    (0..reps.max(1))
        .map(|_| {
            let (start, cpu_start) = (Instant::now(), process_cpu_seconds());
            std::hint::black_box(f());
            match cpu {
                true => process_cpu_seconds() - cpu_start,
                false => start.elapsed().as_secs_f64(),
            }
        })
        .fold(f64::INFINITY, f64::min)
}

/// The operation categories of the table, in order.
pub const CATEGORIES: [&str; 5] = ["conv forward", "conv input grad", "conv weight grad", "BN(+ReLU) forward", "BN(+ReLU) backward"];

/// Seconds per category for one view's layers with implementation `which`.
fn measure(layers: &[Layer], which: &str, reps: usize, per_layer: bool) -> [f64; 5] {
    let ours = which == "barlow";
    let mut total = [0.0; 5];
    for (i, layer) in layers.iter().enumerate() {
        let mut t = [0.0; 5];
        let seed = i as u64 * 7;
        if let Some(c) = &layer.conv {
            let options = ConvOptions::new([c.stride; 2], [c.padding; 2], [1, 1], 1);
            let (x, w) = (random(&c.x, seed), random(&c.weight, seed + 1));
            let dy = random(&layer.bn, seed + 2);
            let o = || options.clone();
            t[0] += match ours {
                true => time(reps, || <Flex as Kernels>::conv2d_forward(x.clone(), w.clone(), o())),
                false => time(reps, || Flex::conv2d(x.clone(), w.clone(), None, o())),
            };
            if layer.input_grad {
                t[1] += match ours {
                    true => time(reps, || <Flex as Kernels>::conv2d_input_grad(x.clone(), w.clone(), dy.clone(), o())),
                    false => time(reps, || Flex::conv2d_x_backward(x.clone(), w.clone(), dy.clone(), o())),
                };
            }
            t[2] += match ours {
                true => time(reps, || <Flex as Kernels>::conv2d_weight_grad(x.clone(), w.clone(), dy.clone(), o())),
                false => time(reps, || Flex::conv2d_weight_backward(x.clone(), w.clone(), dy.clone(), o())),
            };
        }
        let c = layer.bn[1];
        let (x, gamma, beta, dy) = (random(&layer.bn, seed + 3), random(&[c], seed + 4), random(&[c], seed + 5), random(&layer.bn, seed + 6));
        let relu = layer.relu;
        let (y, mean, var) = <Flex as Kernels>::batch_norm_forward(x.clone(), gamma.clone(), beta.clone(), 1e-5, relu, None);
        if ours {
            t[3] += time(reps, || <Flex as Kernels>::batch_norm_forward(x.clone(), gamma.clone(), beta.clone(), 1e-5, relu, None));
            t[4] += time(reps, || {
                <Flex as Kernels>::batch_norm_backward(x.clone(), gamma.clone(), mean.clone(), var.clone(), 1e-5, relu, y.clone(), dy.clone(), None)
            });
        } else {
            t[3] += time(reps, || {
                let r = Flex::batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5);
                if relu { Flex::relu(r.output) } else { r.output }
            });
            t[4] += time(reps, || {
                let g = if relu { Flex::relu_backward(y.clone(), dy.clone()) } else { dy.clone() };
                Flex::batch_norm_train_backward(x.clone(), gamma.clone(), mean.clone(), var.clone(), 1e-5, g)
            });
        }
        if per_layer {
            eprintln!("{which:>7} {:<22} {:?} {}", layer.name, layer.bn, t.map(|v| format!("{:.4}", v)).join(" "));
        }
        total.iter_mut().zip(t).for_each(|(a, b)| *a += b);
    }
    total
}

pub fn run(args: &OpsArgs) -> Result<()> {
    let layers = layers(args.arch, args.width, args.batch, args.size, &args.projector_bn);
    if args.list {
        println!("{}", serde_json::to_string_pretty(&layers)?);
        return Ok(());
    }
    CPU_TIME.store(args.cpu_time, std::sync::atomic::Ordering::Relaxed);
    println!("{} seconds per step (two views), {:?} width {} N={} {}px, {} threads:",
        if args.cpu_time { "CPU" } else { "wall-clock" }, args.arch, args.width, args.batch, args.size,
        rayon::current_num_threads());
    let mut columns = vec![];
    for which in &args.implementation {
        if !matches!(which.as_str(), "burn" | "barlow") {
            bail!("unknown implementation `{which}` (expected burn or barlow)");
        }
        columns.push((which.clone(), measure(&layers, which, args.reps, args.per_layer).map(|s| 2.0 * s)));
    }
    print!("{:<20}", "operation");
    columns.iter().for_each(|(name, _)| print!("{name:>10}"));
    println!();
    for (i, category) in CATEGORIES.iter().enumerate() {
        print!("{category:<20}");
        columns.iter().for_each(|(_, t)| print!("{:>10.3}", t[i]));
        println!();
    }
    print!("{:<20}", "total");
    columns.iter().for_each(|(_, t)| print!("{:>10.3}", t.iter().sum::<f64>()));
    println!();
    Ok(())
}

/// Seconds of CPU time this process has used, all threads together.
pub fn process_cpu_seconds() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the pointer it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}
