//! The archive as the server configures it; the format and its checks are the `trail-archive` crate's.

pub use trail_archive::*;

use crate::settings::Settings;

/// The archive `retention.archive` names (see [`Archive::open`]).
pub fn open(settings: &Settings) -> Result<Archive> {
    Archive::open(&settings.retention.archive, &settings.retention.s3_endpoint, &settings.data_dir)
}
