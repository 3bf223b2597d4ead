//! Runs identity-svc on its own (the same as `sportello identity`).

fn main() -> anyhow::Result<()> {
    // Uploaded files are read by this same program as a limited child process.
    if std::env::args().nth(1).as_deref() == Some(sportello_platform::probe::PROBE_ARG) {
        std::process::exit(sportello_platform::probe::child_main());
    }
    sportello_platform::cli::run_service(identity_svc::serve)
}
