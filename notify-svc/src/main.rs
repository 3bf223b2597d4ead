//! Runs notify-svc on its own (the same as `sportello notify`).

fn main() -> anyhow::Result<()> {
    sportello_platform::cli::run_service(
        "notify",
        notify_svc::Config::load,
        |c| c.server.listen,
        notify_svc::serve,
    )
}
