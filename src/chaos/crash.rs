//! The `crash` scenario (to be written).

use super::{Options, Report};

pub async fn run(_options: &Options) -> anyhow::Result<Report> {
    anyhow::bail!("the crash scenario is not written yet")
}
