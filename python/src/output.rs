//! Options of decoding straight into a file (`decode_to_file`); the output kinds themselves are
//! the library's `movq::io::OutputSink`, the same as `movq decode --output`.

use movq::io::Chroma;

pub fn chroma(s: &str) -> Option<Chroma> {
    match s {
        "420" => Some(Chroma::C420),
        "444" => Some(Chroma::C444),
        _ => None,
    }
}
