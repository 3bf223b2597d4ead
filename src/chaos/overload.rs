//! The `overload` scenario (to be written).

use super::suite::Suite;
use super::{Options, Report};

pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let suite = Suite::start(options, |_| {}).await?;
    let mut report = Report::default();
    report.figure(format!(
        "gateway at {}, identity pid {:?}, peak RSS {:?} KiB",
        suite.addr("gateway"),
        suite.pid("identity"),
        suite.peak_rss_kib("identity")
    ));
    suite.stop().await?;
    anyhow::bail!("the overload scenario is not written yet")
}
