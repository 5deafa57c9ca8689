//! The allowed range of a numeric setting: checked where a config is read, and by the
//! command-line options that set the same kinds of value, with errors naming key, value and range.

use anyhow::{Result, bail};
use std::fmt;

/// An interval of finite numbers; NaN and ±∞ lie in none.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    pub lo: f64,
    pub hi: f64,
    lo_open: bool,
    hi_open: bool,
}

impl Range {
    /// `[lo, hi]`.
    pub const fn closed(lo: f64, hi: f64) -> Range {
        Range { lo, hi, lo_open: false, hi_open: false }
    }
    /// `[lo, ∞)`.
    pub const fn at_least(lo: f64) -> Range {
        Range { lo, hi: f64::INFINITY, lo_open: false, hi_open: true }
    }
    /// `(lo, ∞)`.
    pub const fn above(lo: f64) -> Range {
        Range { lo, hi: f64::INFINITY, lo_open: true, hi_open: true }
    }
    /// `[lo, hi)`.
    pub const fn half_open(lo: f64, hi: f64) -> Range {
        Range { lo, hi, lo_open: false, hi_open: true }
    }

    pub fn contains(&self, v: f64) -> bool {
        let above = if self.lo_open { v > self.lo } else { v >= self.lo };
        let below = if self.hi_open { v < self.hi } else { v <= self.hi };
        v.is_finite() && above && below
    }

    /// An error naming `key`, `value` and the range unless the range holds the value.
    pub fn check(&self, key: &str, value: impl Into<Number>) -> Result<()> {
        let value = value.into();
        if !self.contains(value.0) {
            bail!("{key} = {value} is out of range: it must lie in {self}");
        }
        Ok(())
    }

    /// A clap value parser for an option taking a number in this range.
    pub fn parser<T>(self) -> impl Fn(&str) -> std::result::Result<T, String> + Clone + Send + Sync + 'static
    where
        T: std::str::FromStr + Copy + Into<Number>,
        T::Err: fmt::Display,
    {
        move |s: &str| {
            let v: T = s.trim().parse().map_err(|e| format!("`{s}` is not a number: {e}"))?;
            match self.contains(v.into().0) {
                true => Ok(v),
                false => Err(format!("{s} is out of range: it must lie in {self}")),
            }
        }
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let end = |v: f64| if v.is_infinite() { "∞".to_string() } else { v.to_string() };
        let (open, close) = (if self.lo_open { '(' } else { '[' }, if self.hi_open { ')' } else { ']' });
        write!(f, "{open}{}, {}{close}", end(self.lo), end(self.hi))
    }
}

/// A setting's value as the error shows it: integers without a fraction.
#[derive(Clone, Copy, Debug)]
pub struct Number(pub f64);

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<f64> for Number {
    fn from(v: f64) -> Number {
        Number(v)
    }
}

impl From<usize> for Number {
    fn from(v: usize) -> Number {
        Number(v as f64)
    }
}

impl From<u64> for Number {
    fn from(v: u64) -> Number {
        Number(v as f64)
    }
}

/// Ranges shared by config keys and command-line options.
pub const POSITIVE: Range = Range::above(0.0);
pub const NON_NEGATIVE: Range = Range::at_least(0.0);
pub const COUNT: Range = Range::at_least(1.0);
/// Each layer of `model.projector` and of a head: a D×D weight and C stay below 4 GiB.
pub const LAYER: Range = Range::closed(1.0, 32768.0);

/// A head's layer widths (`key`): at least one layer, each within [`LAYER`].
pub fn layers(key: &str, widths: &[usize]) -> Result<()> {
    if widths.is_empty() {
        bail!("{key} = [] needs at least one layer");
    }
    for (i, &w) in widths.iter().enumerate() {
        LAYER.check(&format!("{key}[{i}] (of {widths:?})"), w)?;
    }
    Ok(())
}
/// A fraction in `(0, 1]`.
pub const FRACTION: Range = Range { lo: 0.0, hi: 1.0, lo_open: true, hi_open: false };

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_open_and_closed() {
        assert!(Range::closed(8.0, 4096.0).contains(8.0) && Range::closed(8.0, 4096.0).contains(4096.0));
        assert!(!Range::closed(8.0, 4096.0).contains(7.0) && !Range::closed(8.0, 4096.0).contains(4097.0));
        assert!(!POSITIVE.contains(0.0) && POSITIVE.contains(1e-300) && NON_NEGATIVE.contains(0.0));
        assert!(Range::half_open(0.0, 1.0).contains(0.0) && !Range::half_open(0.0, 1.0).contains(1.0));
        for r in [POSITIVE, NON_NEGATIVE, COUNT, FRACTION] {
            assert!(!r.contains(f64::NAN) && !r.contains(f64::INFINITY) && !r.contains(f64::NEG_INFINITY));
        }
        assert_eq!(Range::half_open(0.0, 1.0).to_string(), "[0, 1)");
        assert_eq!(POSITIVE.to_string(), "(0, ∞)");
        let err = Range::closed(8.0, 4096.0).check("data.size", 100000usize).unwrap_err().to_string();
        assert_eq!(err, "data.size = 100000 is out of range: it must lie in [8, 4096]");
    }

    #[test]
    fn parsers_refuse_what_the_range_refuses() {
        let k = COUNT.parser::<usize>();
        assert_eq!(k("5"), Ok(5));
        assert!(k("0").unwrap_err().contains("[1, ∞)"));
        assert!(k("x").is_err());
        let t = POSITIVE.parser::<f64>();
        for bad in ["0", "-1", "nan", "inf"] {
            assert!(t(bad).is_err(), "{bad}");
        }
        assert_eq!(t("0.07"), Ok(0.07));
    }
}
