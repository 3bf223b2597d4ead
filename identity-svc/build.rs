//! `sqlx::migrate!` embeds the migrations at compile time but does not watch the directory for new
//! files; this makes a new migration rebuild the crate.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
