//! Peak resident memory per module of a decode (Linux): after each module output the tracer
//! prints the process's peak RSS since the previous one (`VmHWM`, then reset by writing 5 to
//! `/proc/self/clear_refs`) and its current RSS. Where a decode's memory goes, module by module.
//!
//! cargo run --release --example peak_rss_per_module -- WEIGHTS LATENT.npy [whole|chunked]
//! (WEIGHTS: anything `movq decode --weights` takes; default mode chunked.)

use movq::checkpoint::OpenOptions;
use movq::model::{DecodeMode, Tracer};
use movq::{Checkpoint, Tensor};
use std::time::Instant;

/// A `kB` field of /proc/self/status, in MiB.
fn status_mib(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? / 1024)
}

struct PeakRss(Instant);

impl Tracer<f32> for PeakRss {
    /// Only outputs the fused path forms anyway (not norms, not conv2 before its residual),
    /// so tracing adds no memory.
    fn wants(&self, path: &str) -> bool {
        !["norm1", "norm2", "conv2", "norm_out"].iter().any(|m| path.ends_with(m))
    }

    fn record(&mut self, path: &str, x: &Tensor<f32>) -> movq::Result<()> {
        let (hwm, rss) = (status_mib("VmHWM:"), status_mib("VmRSS:"));
        let s = x.shape();
        println!(
            "{:8.2} s  {path:<28} ({}, {}, {}, {}, {})  peak {:>6} MiB  now {:>6} MiB",
            self.0.elapsed().as_secs_f64(),
            s.n,
            s.c,
            s.d,
            s.h,
            s.w,
            hwm.unwrap_or(0),
            rss.unwrap_or(0)
        );
        // Resets VmHWM to the current RSS (Linux >= 4.0).
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        Ok(())
    }
}

fn main() -> movq::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: peak_rss_per_module WEIGHTS LATENT.npy [whole|chunked]");
        std::process::exit(2);
    }
    let decoder = Checkpoint::open(args[1].as_ref(), &OpenOptions::default())?.load::<f32>()?;
    let z = movq::io::read_latent::<f32>(args[2].as_ref(), None)?;
    let mode = match args.get(3).map(String::as_str) {
        Some("whole") => DecodeMode::Whole,
        None | Some("chunked") => DecodeMode::Chunked,
        Some(other) => {
            eprintln!("unknown mode {other} (whole, chunked)");
            std::process::exit(2);
        }
    };
    let mut tracer = PeakRss(Instant::now());
    decoder.decode_stream_traced(&z, &mode, &mut |_| Ok(()), |_, _| Ok(()), Some(&mut tracer))?;
    println!("after the decode: now {} MiB", status_mib("VmRSS:").unwrap_or(0));
    Ok(())
}
