//! Offline checks of `deploy/`: runs `scripts/validate_deploy.sh`, which
//! validates the Kubernetes manifests against the Kubernetes schemas (and the
//! KEDA ScaledObject against `deploy/k8s/schemas/`), checks that config,
//! probes, Service, PDB, KEDA, Dockerfile and Grafana dashboard agree with
//! each other and with the worker, and lints `deploy/Dockerfile` with
//! hadolint. Needs `python3` and PyPI on first run (tools are cached in a venv
//! under `~/.cache/riskstream`); no cluster, Docker daemon or broker.

use std::process::Command;

#[test]
fn deploy_manifests_validate() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg("scripts/validate_deploy.sh")
        .current_dir(root)
        .output()
        .expect("cannot run bash scripts/validate_deploy.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/validate_deploy.sh failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    // The summary line, visible with `cargo test -- --nocapture`.
    println!("{}", stdout.lines().last().unwrap_or_default());
}
