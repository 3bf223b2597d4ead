//! Runs the gateway on its own (the same as `sportello gateway`).

fn main() -> anyhow::Result<()> {
    sportello_platform::cli::run_service(gateway::serve)
}
