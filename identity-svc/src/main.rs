//! Runs identity-svc on its own (the same as `sportello identity`).

fn main() -> anyhow::Result<()> {
    sportello_platform::cli::run_service(identity_svc::serve)
}
