//! Runs claims-svc on its own (the same as `sportello claims`).

fn main() -> anyhow::Result<()> {
    sportello_platform::cli::run_service(claims_svc::serve)
}
