//! What a run reads besides the models: evaluation data (safetensors files
//! and image folders, with eval's pixel cache), CLIP preprocessing, the named label spaces and the
//! projection of logits onto them, and the demo's procedural images.

pub mod dataset;
pub mod image_set;
pub mod label_spaces;
pub mod pixel_cache;
pub mod pixel_file;
pub mod preprocess;
pub mod projection;
pub mod resample;
pub mod synth;
