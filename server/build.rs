//! `sqlx::migrate!` embeds `migrations/` at compile time, but cargo does not know: a migration
//! that is only added (no Rust file touched) would be left out of the binary.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
