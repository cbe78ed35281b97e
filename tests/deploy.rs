//! Offline checks of `deploy/`: runs `scripts/validate_deploy.sh`, which
//! validates the Kubernetes manifests against the Kubernetes schemas (and the
//! KEDA ScaledObject against `deploy/k8s/schemas/`), checks that config,
//! probes, Service, PDB, KEDA, Dockerfile and Grafana dashboard agree with
//! each other and with the worker, and lints `deploy/Dockerfile` with
//! hadolint. Needs `python3` and PyPI on first run (the script installs its
//! tools in a venv under `~/.cache/riskstream`); no cluster, Docker daemon or
//! broker. Test tier 2 (docs/testing.md): it runs outside tools.

use std::process::Command;

/// Kubernetes documents in deploy/k8s (their `kind:` lines at the top level).
fn manifests(root: &str) -> usize {
    let dir = std::path::Path::new(root).join("deploy/k8s");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .map(|p| {
            std::fs::read_to_string(&p)
                .unwrap()
                .lines()
                .filter(|l| l.starts_with("kind:"))
                .count()
        })
        .sum()
}

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
    // The summary says what was validated: every manifest against its
    // schema, the consistency checks, and a hadolint run (a validator that
    // did not run fails the script, and would show here).
    let summary = stdout.lines().last().unwrap_or_default();
    println!("{summary}");
    let want = manifests(root);
    assert!(want > 0, "no manifests in deploy/k8s");
    assert!(
        summary.starts_with(&format!("validate_deploy: OK: {want} manifests valid")),
        "expected all {want} manifests validated: {summary}"
    );
    let checks: usize = summary
        .split(", ")
        .find_map(|part| part.strip_suffix(" checks passed")?.parse().ok())
        .unwrap_or_else(|| panic!("no check count: {summary}"));
    assert!(checks > want, "{checks} checks: {summary}");
    assert!(
        summary.contains("Dockerfile hadolint ") && summary.ends_with(" clean"),
        "hadolint did not lint the Dockerfile: {summary}"
    );
}
