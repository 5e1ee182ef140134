//! What a run leaves behind: `summary.json` and the terminal tables,
//! `samples.csv`, the SVG plots, provenance, the bmm components as
//! checkpoints, and the output folder that holds them (locked, committed
//! whole).

pub mod components;
pub mod outdir;
pub mod plot;
pub mod provenance;
pub mod results;
pub mod samples_csv;
pub mod summary;
