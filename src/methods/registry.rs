//! The registry's machinery: from the one list in `methods/mod.rs`, the enums that name,
//! configure, build and run a method by its `model.method` — each arm a call into the method's
//! own file.

use super::method::MethodSettings;
use super::Method;
use anyhow::{Result, bail};

/// `registry! { file::Type => Variant, … }`: each method's module, and `Method`, `Settings`,
/// `Model` and `Carry` with one variant per method.
macro_rules! registry {
    ($($file:ident :: $ty:ident => $variant:ident),+ $(,)?) => {
        $(pub mod $file;)+

        /// Which method trains the encoder (`model.method`); the first is the default.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub enum Method { $($variant),+ }

        impl Method {
            pub const ALL: [Method; [$(stringify!($variant)),+].len()] = [$(Method::$variant),+];

            /// The name configs and the command line use.
            pub fn name(self) -> &'static str {
                match self { $(Method::$variant => <$file::$ty as SelfSupervised>::NAME),+ }
            }

            /// The name its paper uses.
            pub fn title(self) -> &'static str {
                match self { $(Method::$variant => <$file::$ty as SelfSupervised>::TITLE),+ }
            }

            pub fn traits(self) -> Traits {
                match self { $(Method::$variant => <$file::$ty as SelfSupervised>::TRAITS),+ }
            }

            pub fn plot(self) -> Plot {
                match self { $(Method::$variant => <$file::$ty as SelfSupervised>::PLOT),+ }
            }

            pub fn crossing(self) -> Crossing {
                match self { $(Method::$variant => <$file::$ty as SelfSupervised>::CROSSING),+ }
            }

            pub fn multi_crop(self) -> bool {
                match self { $(Method::$variant => <$file::$ty as SelfSupervised>::MULTI_CROP),+ }
            }

            /// The method's own `[model]` keys.
            pub fn keys(self) -> Vec<String> {
                match self { $(Method::$variant => registry::keys::<<$file::$ty as SelfSupervised>::Settings>()),+ }
            }

            /// Its numeric keys (`model.KEY`) with their ranges.
            pub fn ranges(self) -> Vec<(&'static str, crate::config::range::Range)> {
                match self { $(Method::$variant => <<$file::$ty as SelfSupervised>::Settings as MethodSettings>::ranges()),+ }
            }

            /// Its settings from the `[model]` keys that are not the encoder's or the projector's,
            /// the paper's values filled in for those left out (`d`: the projector's width).
            pub fn settings(self, table: toml::Table, d: usize) -> anyhow::Result<Settings> {
                Ok(match self { $(Method::$variant => Settings::$variant(registry::parse(self, table, d)?)),+ })
            }
        }

        /// Each method's hostile cases for its numeric `[model]` keys.
        #[cfg(test)]
        pub const KEY_CASES: &[&[crate::config::valid::KeyCase]] = &[$($file::KEY_CASES),+];

        /// A method's settings (the `[model]` keys besides the encoder and the projector).
        #[derive(Clone, Debug, PartialEq)]
        pub enum Settings { $($variant(<$file::$ty as SelfSupervised>::Settings)),+ }

        impl Settings {
            pub fn method(&self) -> Method {
                match self { $(Settings::$variant(_) => Method::$variant),+ }
            }

            pub fn check(&self, run: &Setup) -> anyhow::Result<()> {
                match self { $(Settings::$variant(s) => s.check(run)),+ }
            }

            /// The settings as `[model]` keys.
            pub fn to_table(&self) -> toml::Table {
                let table = match self { $(Settings::$variant(s) => toml::Table::try_from(s)),+ };
                table.expect("settings serialise")
            }

            /// The model with fresh weights (the encoder ending at its pooled features).
            pub fn init(&self, encoder: &ResNetConfig, projector: &[usize], device: &Device) -> Model {
                match self { $(Settings::$variant(s) => Model::$variant(<$file::$ty>::init(s, encoder, projector, device))),+ }
            }
        }

        /// An encoder trained by one of the methods: the online network and the method's state.
        /// Checkpoints name its tensors without the variant (`backbone.conv1.weight`).
        // One model per run: a few kilobytes of handles moved once per step, not worth a box.
        #[allow(clippy::large_enum_variant)]
        #[derive(Module, Debug)]
        pub enum Model { $($variant($file::$ty)),+ }

        /// What a step of a method leaves for [`Model::after_step`].
        #[allow(clippy::large_enum_variant)]
        pub enum Carry { $($variant(<$file::$ty as SelfSupervised>::Carry)),+ }

        impl Model {
            pub fn method(&self) -> Method {
                match self { $(Model::$variant(_) => Method::$variant),+ }
            }

            /// The encoder (a torchvision-named ResNet ending at its pooled features).
            pub fn backbone(&self) -> &ResNet {
                match self { $(Model::$variant(m) => m.backbone()),+ }
            }

            /// The model with another encoder (`train --init`), what follows it following it.
            pub fn with_backbone(self, backbone: ResNet) -> Model {
                match self { $(Model::$variant(m) => Model::$variant(m.with_backbone(backbone))),+ }
            }

            /// Projector outputs `z` (`N×D`) of one view.
            pub fn project(&self, images: Tensor<4>) -> Tensor<2> {
                match self { $(Model::$variant(m) => m.project(images)),+ }
            }

            /// The loss of a batch's views (this process's share) at `at`, and what the step leaves.
            pub fn forward(&self, crops: &Crops, batch: &Batchwide, at: Stage) -> (Loss, Carry) {
                match self {
                    $(Model::$variant(m) => {
                        let (loss, carry) = m.forward(crops, batch, at);
                        (loss, Carry::$variant(carry))
                    })+
                }
            }

            /// The gradients the optimiser applies (the method's [`SelfSupervised::adjust_gradients`]).
            pub fn adjust_gradients(&self, grads: burn::optim::GradientsParams, at: Stage) -> burn::optim::GradientsParams {
                match self { $(Model::$variant(m) => m.adjust_gradients(grads, at)),+ }
            }

            /// The method's state after the optimisation step at `at`.
            pub fn after_step(self, carry: Carry, at: Stage) -> Model {
                match (self, carry) {
                    $((Model::$variant(m), Carry::$variant(c)) => Model::$variant(m.after_step(c, at)),)+
                    (m, _) => panic!("a step's state of another method than {}", m.method()),
                }
            }
        }
    };
}

pub(super) use registry;

/// The keys of a method's settings, as they serialise once resolved.
pub fn keys<S: MethodSettings>() -> Vec<String> {
    let mut s = S::default();
    s.resolve(1);
    toml::Table::try_from(&s).expect("settings serialise").keys().cloned().collect()
}

/// `method`'s settings from `table`: a key of another method is refused naming the methods
/// that have it, any other unknown key naming the method's keys.
pub fn parse<S: MethodSettings>(method: Method, table: toml::Table, d: usize) -> Result<S> {
    let own = keys::<S>();
    if let Some(key) = table.keys().find(|k| !own.contains(k)) {
        let owners: Vec<_> = Method::ALL.iter().filter(|m| m.keys().contains(key)).map(|m| m.name()).collect();
        if owners.is_empty() {
            bail!("model.{key} is not a setting of model.method = \"{method}\" (its own are: {})", own.join(", "));
        }
        let what = match key.as_str() {
            "predictor" => "no predictor".to_string(),
            "queue" => "no queue".to_string(),
            "ema" => "no momentum network".to_string(),
            key => format!("no `{key}`"),
        };
        bail!(
            "model.{key} is set, but model.method = \"{method}\" has {what} (only {} use model.{key}); remove it, or \
             start from the method's own preset (`--config {method}-cifar10`)",
            owners.join(" and ")
        );
    }
    let mut settings: S = toml::Value::Table(table).try_into().map_err(|e| anyhow::anyhow!("model: {e}"))?;
    settings.resolve(d);
    Ok(settings)
}

impl Default for Method {
    fn default() -> Method {
        Method::ALL[0]
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Method::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            let names: Vec<_> = Method::ALL.iter().map(|m| m.name()).collect();
            format!("unknown method `{s}` (model.method is one of {})", names.join(", "))
        })
    }
}

impl TryFrom<String> for Method {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Method> for String {
    fn from(m: Method) -> String {
        m.name().to_string()
    }
}
