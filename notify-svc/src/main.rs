//! Runs notify-svc on its own (the same as `sportello notify`).

fn main() -> anyhow::Result<()> {
    sportello_platform::cli::run_service(notify_svc::serve)
}
