//! `movq demo`: decodes a bundled latent with a bundled decoder, both built into the binary, and
//! writes the clip as an animated PNG and PNG frames, with its PSNR against the bundled
//! ground truth. The decoder is a small MOVQDecoder3D trained by `scripts/demo/train.py` (with
//! a throwaway encoder) on synthetic clips of shapes moving over gradients; the latent is that
//! encoder's code for a held-out clip.

use anyhow::{Context, Result, bail};
use clap::Args;
use movq::checkpoint::OpenOptions;
use movq::io::{Chroma, VideoFormat, VideoOptions, VideoWriter, parse_npy, rgb8};
use movq::model::DecodeMode;
use movq::{Checkpoint, Shape, Tensor};
use std::path::{Path, PathBuf};
use std::time::Instant;

const WEIGHTS: &[u8] = include_bytes!("../../assets/demo/decoder.safetensors");
/// (1, 4, T, H/4, W/4) float32.
const LATENT: &[u8] = include_bytes!("../../assets/demo/latent.npy");
/// Ground-truth frames (frames, H, W, 3) uint8.
const FRAMES: &[u8] = include_bytes!("../../assets/demo/frames.npy");

#[derive(Args)]
pub struct DemoArgs {
    /// Directory for the outputs (created if missing): demo.apng, frames/, ground_truth.apng.
    #[arg(long, default_value = "movq-demo")]
    pub out: PathBuf,
    /// Frame rate of the animated PNGs.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub fps: u32,
}

/// A writer of video (1, 3, t, h, w) `y` to `path` as `format`, with all frames written: what
/// is left is [`VideoWriter::finish`] (the rename that makes the output appear).
fn write_video(path: &Path, y: &Tensor<f32>, format: VideoFormat, fps: u32) -> Result<VideoWriter> {
    let opts = VideoOptions { format, fps, chroma: Chroma::C444 };
    let mut w = VideoWriter::create(path, y.shape(), opts)?;
    w.write(0, y)?;
    Ok(w)
}

/// The demo's outputs written so far, removed if a later one fails (with the directory, if
/// this run created it and it is then empty): a run leaves all of them or none.
struct Made {
    dir: Option<PathBuf>,
    outputs: Vec<PathBuf>,
}

impl Made {
    fn keep(mut self) {
        self.dir = None;
        self.outputs.clear();
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        for p in self.outputs.drain(..) {
            if p.is_dir() {
                // Holds only the frames this run wrote (the writer replaced the directory).
                let _ = movq::io::output::remove_frame_dir(&p);
            } else {
                let _ = std::fs::remove_file(&p);
            }
        }
        if let Some(d) = self.dir.take() {
            let _ = std::fs::remove_dir(&d);
        }
    }
}

pub fn demo(a: &DemoArgs) -> Result<()> {
    let t0 = Instant::now();
    let ck = Checkpoint::from_bytes("<bundled demo decoder>", WEIGHTS.to_vec(), &OpenOptions::default())?;
    let decoder = ck.load::<f32>()?;
    let cfg = ck.config();
    let (zd, zv) = parse_npy::<f32>(Path::new("<bundled demo latent>"), LATENT)?;
    let z = Tensor::from_vec(Shape::from_dims(&zd)?, zv)?;
    let (gd, gt) = parse_npy::<f32>(Path::new("<bundled demo frames>"), FRAMES)?;
    let file = &ck.files[0];
    let params: usize =
        file.names().filter_map(|n| file.info(n)).map(|i| i.shape.iter().product::<usize>()).sum();
    eprintln!(
        "bundled decoder: {} ch {} ch_mult {:?}, {} parameters (float16); latent z {}",
        serde_json::to_value(cfg.class)?.as_str().unwrap_or("?"),
        cfg.ch,
        cfg.ch_mult,
        params,
        z.shape()
    );
    let t1 = Instant::now();
    let y = decoder.decode(&z, &DecodeMode::Whole)?;
    let decode_s = t1.elapsed().as_secs_f64();
    let s = y.shape();
    if gd != [s.d, s.h, s.w, 3] {
        bail!("bundled frames have shape {gd:?}, the decoder made {s}");
    }

    // 8-bit PSNR against the ground truth, over all frames and channels.
    let mut sq = 0.0f64;
    for t in 0..s.d {
        let frame = rgb8(&y, 0, t);
        let truth = &gt[t * frame.len()..][..frame.len()];
        sq += frame.iter().zip(truth).map(|(&p, &q)| (p as f64 - q as f64).powi(2)).sum::<f64>();
    }
    let mse = sq / gt.len() as f64;
    let psnr = movq::metrics::psnr(mse, 255.0);

    let apng = a.out.join("demo.apng");
    let frames = a.out.join("frames");
    let truth = a.out.join("ground_truth.apng");
    // The ground truth back to [-1, 1]; the pixel mapping returns every k / 255 exactly.
    let mut g = Tensor::<f32>::zeros(s)?;
    let fl = s.frame_len();
    for (i, v) in gt.iter().enumerate() {
        let (t, p, c) = (i / (fl * 3), (i / 3) % fl, i % 3);
        g.data_mut()[(c * s.d + t) * fl + p] = v / 255.0 * 2.0 - 1.0;
    }
    let mut made = Made { dir: None, outputs: Vec::new() };
    if !a.out.exists() {
        std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
        made.dir = Some(a.out.clone());
    }
    // Every output is written to its temporary before the first appears.
    let writers =
        [(&apng, &y, VideoFormat::Apng), (&frames, &y, VideoFormat::PngDir), (&truth, &g, VideoFormat::Apng)]
            .into_iter()
            .map(|(path, video, format)| Ok((path, write_video(path, video, format, a.fps)?)))
            .collect::<Result<Vec<_>>>()?;
    for (path, w) in writers {
        w.finish()?;
        made.outputs.push(path.clone());
    }
    made.keep();
    println!(
        "decoded the bundled latent {} -> {} frames of {}x{} in {decode_s:.2} s",
        z.shape(),
        s.d,
        s.w,
        s.h
    );
    println!("PSNR against the bundled ground truth: {psnr:.2} dB (8-bit RGB, {} frames)", s.d);
    println!("wrote {} (animated PNG, {} fps)", apng.display(), a.fps);
    println!("wrote {}/frame_00000.png .. frame_{:05}.png", frames.display(), s.d - 1);
    println!("wrote {} (the clip the latent was encoded from)", truth.display());
    println!("total {:.2} s, {} threads", t0.elapsed().as_secs_f64(), rayon::current_num_threads());
    Ok(())
}
