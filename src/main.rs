//! The service binary. Everything systemd- and lifecycle-related is `seamless-core`'s; the
//! application is `app.rs`. Run with `cargo run` (serves on 127.0.0.1:8080).

mod app;

fn main() -> std::process::ExitCode {
    seamless_core::main::<app::Demo>()
}
