//! `cargo run -p steering-core --example check_policy -- FILE...`: validate policy files without steerd.

#![allow(clippy::print_stdout, reason = "a command-line example")]

fn main() {
    let mut failed = false;
    for path in std::env::args().skip(1) {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        match steering_core::Policy::from_yaml(&path, &text) {
            Ok(p) => println!(
                "{path}: ok ({} regions, {} services)",
                p.regions.len(),
                p.services.len()
            ),
            Err(e) => {
                println!("{e}");
                failed = true;
            }
        }
    }
    std::process::exit(i32::from(failed));
}
