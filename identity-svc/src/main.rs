//! Runs identity-svc on its own (the same as `sportello identity`).

fn main() -> anyhow::Result<()> {
    sportello_platform::cli::run_service(
        "identity",
        identity_svc::Config::load,
        |c| c.server.listen,
        identity_svc::serve,
    )
}
