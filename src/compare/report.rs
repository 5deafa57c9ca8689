//! The comparison's report: `compare.md` (the methods' traits beside the measured kNN accuracy
//! per batch size and the batch sensitivity), `compare.csv` (one row per run) and `compare.png`.

use super::{Comparison, Outcome, Run};
use crate::methods::Method;
use anyhow::Result;
use std::fmt::Write;
use std::path::Path;

/// Rewrites the three files from the runs finished so far.
pub fn write(out: &Path, cmp: &Comparison, batch_sizes: &[usize], done: &[(Run, Outcome)]) -> Result<()> {
    crate::store::checkpoint::write_atomically(&out.join("compare.csv"), csv(done).as_bytes())?;
    crate::store::checkpoint::write_atomically(&out.join("compare.md"), markdown(cmp, batch_sizes, done).as_bytes())?;
    super::plot::accuracy_by_batch(&series(done), baseline(done), &title(done), &out.join("compare.png"))
}

/// The peak learning rate of the weights: the recipe's rate scaled to the run's batch size.
fn peak_lr(run: &Run) -> f64 {
    let o = &run.config.optim;
    o.lr_weights * o.lr_scaling.factor(o.batch_size)
}

fn csv(done: &[(Run, Outcome)]) -> String {
    let mut s = String::from(
        "method,batch_size,epochs,steps,optimizer,lr_weights,lr_peak,knn_init,knn_top1,knn_top5,linear_top1,last_loss,seconds\n",
    );
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_default();
    for (run, o) in done {
        let optimizer = format!("{:?}", run.config.optim.optimizer).to_lowercase();
        let _ = writeln!(
            s,
            "{},{},{},{},{optimizer},{},{:.6},{},{},{},{},{},{:.1}",
            run.method, run.batch_size, o.epochs, o.steps, run.config.optim.lr_weights, peak_lr(run),
            opt(o.knn_init), opt(o.knn_top1), opt(o.knn_top5), opt(o.linear_top1), opt(o.last_loss), o.seconds
        );
    }
    s
}

/// kNN top-1 of `method` at `batch`, when that run is done.
fn knn(done: &[(Run, Outcome)], method: Method, batch: usize) -> Option<f64> {
    done.iter().find(|(r, _)| r.method == method && r.batch_size == batch).and_then(|(_, o)| o.knn_top1)
}

/// The relative drop (percent) of kNN top-1 from the largest batch to the smallest.
pub fn sensitivity(largest: f64, smallest: f64) -> f64 {
    100.0 * (largest - smallest) / largest
}

fn markdown(cmp: &Comparison, batch_sizes: &[usize], done: &[(Run, Outcome)]) -> String {
    let mut s = String::new();
    let Some((first, _)) = done.first() else { return s };
    let c = &first.config;
    let name = |v: &dyn std::fmt::Debug| format!("{v:?}").to_lowercase();
    let data = match c.data.limit {
        Some(n) => format!("{n} images of {}", c.data.dataset),
        None => c.data.dataset.clone(),
    };
    let _ = writeln!(s, "# barlow compare: {}\n", cmp.name);
    let _ = writeln!(
        s,
        "{} epochs on {data} ({}×{} views `{}`), a {} (width {}, {} stem); each method with its own recipe \
         (`{}`: heads, loss, optimiser, learning rate scaled with the batch as the recipe says). kNN top-1 \
         (k = {}, T = {}) on {} of the labeled splits.\n",
        c.optim.epochs, c.data.size, c.data.size, c.data.views, name(&c.model.arch), c.model.width, name(&c.model.stem),
        format_args!("<method>-{}", cmp.recipes), c.train.knn_k, c.train.knn_t,
        c.train.knn_limit.map(|n| format!("{n} images each")).unwrap_or_else(|| "all".into()),
    );
    let (small, large) = (batch_sizes.iter().min().copied(), batch_sizes.iter().max().copied());
    let mut header = "| Method | Negatives | Momentum encoder | Predictor | Loss | Small batches (paper) |".to_string();
    let mut rule = "|---|---|---|---|---|---|".to_string();
    for b in batch_sizes {
        let _ = write!(header, " kNN @{b} |");
        rule.push_str("---:|");
    }
    header.push_str(" Batch sensitivity |");
    rule.push_str("---:|");
    let _ = writeln!(s, "{header}\n{rule}");
    let methods: Vec<Method> = Method::ALL.into_iter().filter(|m| done.iter().any(|(r, _)| r.method == *m)).collect();
    let yes = |b: bool| if b { "yes" } else { "no" };
    for m in methods {
        let t = m.traits();
        let _ = write!(s, "| {} | {} | {} | {} | {} | {} |", m.title(), t.negatives, yes(t.momentum_encoder),
            yes(t.predictor), t.loss, t.batch_claim);
        for &b in batch_sizes {
            let _ = write!(s, " {} |", knn(done, m, b).map(|v| format!("{v:.1}")).unwrap_or_else(|| "—".into()));
        }
        let drop = match (small, large) {
            (Some(lo), Some(hi)) if lo != hi => knn(done, m, hi).zip(knn(done, m, lo)).map(|(h, l)| sensitivity(h, l)),
            _ => None,
        };
        let _ = writeln!(s, " {} |", drop.map(|d| format!("{d:+.1}%")).unwrap_or_else(|| "—".into()));
    }
    if let (Some(lo), Some(hi)) = (small, large) {
        let _ = writeln!(
            s,
            "\nBatch sensitivity: the relative drop of kNN top-1 from the largest batch ({hi}) to the smallest ({lo}), \
             (acc@{hi} − acc@{lo}) / acc@{hi}; negative when the small batch did better."
        );
    }
    if let Some(b) = baseline(done) {
        let _ = writeln!(s, "The same encoder at random initialisation: kNN top-1 {b:.1}%.");
    }
    let _ = writeln!(s, "\n## Runs\n");
    let _ = writeln!(s, "| Method | Batch | Optimiser | Peak lr | Steps | Last loss | kNN init | kNN top-1 | kNN top-5 | Linear top-1 | Time |");
    let _ = writeln!(s, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let pct = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "—".into());
    for (run, o) in done {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.4} | {} | {} | {} | {} | {} | {} | {:.0} s |",
            run.method.title(), run.batch_size, name(&run.config.optim.optimizer), peak_lr(run), o.steps,
            o.last_loss.map(|l| format!("{l:.3}")).unwrap_or_else(|| "—".into()),
            pct(o.knn_init), pct(o.knn_top1), pct(o.knn_top5), pct(o.linear_top1), o.seconds
        );
    }
    s
}

/// kNN top-1 against batch size, one line per method.
fn series(done: &[(Run, Outcome)]) -> Vec<(String, Vec<(usize, f64)>)> {
    Method::ALL
        .into_iter()
        .filter_map(|m| {
            let mut pts: Vec<(usize, f64)> =
                done.iter().filter(|(r, _)| r.method == m).filter_map(|(r, o)| o.knn_top1.map(|a| (r.batch_size, a))).collect();
            pts.sort_by_key(|p| p.0);
            (!pts.is_empty()).then(|| (m.title().to_string(), pts))
        })
        .collect()
}

/// The random network's kNN top-1, averaged over the runs (the same encoder initialisation).
fn baseline(done: &[(Run, Outcome)]) -> Option<f64> {
    let inits: Vec<f64> = done.iter().filter_map(|(_, o)| o.knn_init).collect();
    (!inits.is_empty()).then(|| inits.iter().sum::<f64>() / inits.len() as f64)
}

/// The dataset's name, or for an image folder the folder's (`folder` would say nothing; for a
/// split folder such as `imagenette/train`, its parent's).
fn data_name(data: &crate::config::DataConfig) -> String {
    let Some(root) = data.root.as_deref().filter(|_| data.dataset == "folder") else {
        return data.dataset.clone();
    };
    let name = |p: &std::path::Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    match name(root) {
        Some(n) if ["train", "val", "test"].contains(&n.as_str()) => root.parent().and_then(name).unwrap_or(n),
        Some(n) => n,
        None => data.dataset.clone(),
    }
}

fn title(done: &[(Run, Outcome)]) -> String {
    match done.first() {
        Some((run, o)) => format!("kNN top-1 after {} epochs of {} by batch size", o.epochs, data_name(&run.config.data)),
        None => "kNN top-1 by batch size".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::data_name;
    use crate::config::Config;

    #[test]
    fn a_folder_is_named_by_its_directory() {
        let set = |s: &[&str]| Config::load("cifar10", &s.iter().map(|v| v.to_string()).collect::<Vec<_>>()).unwrap().data;
        assert_eq!(data_name(&set(&["data.dataset=folder", "data.root=\"/data/imagenette/train\""])), "imagenette");
        assert_eq!(data_name(&set(&["data.dataset=folder", "data.root=\"/data/flowers\""])), "flowers");
        assert_eq!(data_name(&set(&["data.dataset=cifar10"])), "cifar10");
    }
}
