//! Access control, against Apache Kafka with SASL/SCRAM-SHA-512 and the
//! KRaft `StandardAuthorizer` (a broker of its own on 9300, SASL_SSL on
//! 9500, started with `BROKER_AUTH=sasl scripts/broker.sh`):
//! - a principal holding exactly the ACLs README.md lists (parsed from its
//!   `acls:begin`/`acls:end` table, granted with deploy/kafka-acls.sh)
//!   scores every record, dead-letters a poison one, commits to the end
//!   with no authorization error logged; restarted over SASL_SSL with
//!   `ssl.ca.location`, it restores every partition from the changelog and
//!   scores the new records as offline;
//! - with any one of those ACLs missing the worker stops within seconds,
//!   exit status 1, naming the missing permission; a wrong password stops
//!   it too;
//! - no password appears in a worker's logs, errors or /metrics.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const PORT: u16 = 9300;
/// The SASL_SSL listener (broker.sh: BROKER_PORT + 200).
const TLS_PORT: u16 = 9500;
const PARTS: i32 = 2;
const USER: &str = "riskstream";

/// One ACL row of README.md's table; `name` with its placeholders.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    resource: String,
    name: String,
    pattern: String,
    operation: String,
}

/// The rows between `<!-- acls:begin -->` and `<!-- acls:end -->`.
fn readme_acls() -> Vec<Row> {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let begin = readme
        .find("<!-- acls:begin -->")
        .expect("README.md has the acls:begin marker");
    let end = readme[begin..]
        .find("<!-- acls:end -->")
        .expect("README.md has the acls:end marker")
        + begin;
    let rows: Vec<Row> = readme[begin..end]
        .lines()
        .filter(|l| l.trim_start().starts_with('|'))
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_string())
                .collect::<Vec<_>>()
        })
        .filter(|c| {
            c.first()
                .is_some_and(|h| h != "resource type" && !h.starts_with("--"))
        })
        .map(|c| {
            assert_eq!(c.len(), 4, "four cells per ACL row: {c:?}");
            Row {
                resource: c[0].clone(),
                name: c[1].clone(),
                pattern: c[2].to_ascii_lowercase(),
                operation: c[3].clone(),
            }
        })
        .collect();
    assert!(rows.len() >= 5, "the README's ACL table: {rows:?}");
    rows
}

/// A row's resource name for a worker on `t`.
fn substitute(template: &str, t: &Topics) -> String {
    let name = template
        .replace("<input>", &t.input)
        .replace("<scored>", &t.output)
        .replace("<dlq>", &t.dlq)
        .replace("<labels>", &t.labels)
        .replace("<drift>", &t.drift)
        .replace("<state>", &t.changelog())
        .replace("<group>", &t.group);
    assert!(!name.contains('<'), "unknown placeholder in {template}");
    name
}

/// What the worker says when `row` is missing.
fn missing_message(row: &Row, t: &Topics) -> String {
    format!(
        "not authorized to {} {} {}",
        row.operation,
        row.resource.to_ascii_lowercase(),
        substitute(&row.name, t)
    )
}

fn broker_sh(args: &[&str], users: &str) -> std::process::Output {
    Command::new(repo().join("scripts/broker.sh"))
        .args(args)
        .env("BROKER_AUTH", "sasl")
        .env("BROKER_PORT", PORT.to_string())
        .env("BROKER_SCRAM_USERS", users)
        .output()
        .expect("run scripts/broker.sh")
}

/// The broker of this test, stopped and wiped when dropped (also when the
/// test fails; scripts/test.sh stops it too).
struct AuthBroker {
    admin_password: String,
    ca: PathBuf,
}

impl AuthBroker {
    /// `users`: "NAME=PASSWORD ..." made at format time.
    fn start(users: &str) -> Self {
        broker_sh(&["stop", "--wipe"], "");
        let out = broker_sh(&["start"], users);
        assert!(
            out.status.success(),
            "the SASL broker starts: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = |cmd: &str| {
            let o = broker_sh(&[cmd], "");
            assert!(o.status.success(), "broker.sh {cmd}");
            PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
        };
        let admin_config = path("admin-config");
        let ca = path("ca");
        let admin_password = std::fs::read_to_string(admin_config.with_file_name("admin.password"))
            .expect("admin password")
            .trim()
            .to_string();
        Self { admin_password, ca }
    }

    /// Kafka's CLI as the super user.
    fn kafka(&self, args: &[String]) -> std::process::Child {
        Command::new(repo().join("scripts/kafka.sh"))
            .args(args)
            .env("BROKER_AUTH", "sasl")
            .env("BROKER_PORT", PORT.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run scripts/kafka.sh")
    }
}

impl Drop for AuthBroker {
    fn drop(&mut self) {
        broker_sh(&["stop", "--wipe"], "");
    }
}

/// Waits for each child; asserts each succeeded.
fn all_succeed(children: Vec<(String, std::process::Child)>) {
    for (what, c) in children {
        let out = c.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// How a worker connects.
struct Login<'a> {
    user: &'a str,
    password: &'a str,
    /// SASL_SSL with this CA file; None: SASL_PLAINTEXT.
    ca: Option<&'a Path>,
}

/// `riskstream run` as `login` on `t`: security settings in a config
/// file's `[kafka]` table, the password in the environment only.
fn start_worker(t: &Topics, login: &Login<'_>) -> Worker {
    let dir = std::env::temp_dir().join(unique("auth"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (protocol, port, ca) = match login.ca {
        Some(ca) => (
            "SASL_SSL",
            TLS_PORT,
            format!("\"ssl.ca.location\" = {:?}\n", ca.display().to_string()),
        ),
        None => ("SASL_PLAINTEXT", PORT, String::new()),
    };
    let config = dir.join("riskstream.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\n\"security.protocol\" = \"{protocol}\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\"sasl.username\" = \"{}\"\n{ca}",
            login.user
        ),
    )
    .expect("config file");
    let log = dir.join("worker.log");
    let child = Command::new(riskstream_bin())
        .args(["run", "--config"])
        .arg(&config)
        .args(["--brokers", &format!("127.0.0.1:{port}")])
        .args(["--group", &t.group, "--input-topic", &t.input])
        .args(["--output-topic", &t.output, "--labels-topic", &t.labels])
        .args(["--dlq-topic", &t.dlq, "--drift-topic", &t.drift])
        .args(["--device", "cpu", "--metrics-addr", "127.0.0.1:0"])
        .arg("--models-dir")
        .arg(repo().join("models"))
        .env("RISKSTREAM_KAFKA_SASL_PASSWORD", login.password)
        .env("RISKSTREAM_LOG", "info")
        .stdout(std::fs::File::create(dir.join("stdout.log")).expect("stdout file"))
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn worker");
    Worker { child, log }
}

/// The worker binary: cargo's, or RISKSTREAM_TEST_BIN (a copy, where other
/// checkouts share the target directory and may rebuild it mid-test).
fn riskstream_bin() -> PathBuf {
    std::env::var_os("RISKSTREAM_TEST_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_riskstream")),
        PathBuf::from,
    )
}

/// Everything a worker wrote (stderr and stdout).
fn output_of(w: &Worker) -> String {
    let stdout = std::fs::read_to_string(w.log.with_file_name("stdout.log")).unwrap_or_default();
    format!("{}{stdout}", w.log_text())
}

/// Creates `t`'s topics as the super user: every topic the worker uses,
/// the changelog compacted and co-partitioned, the drift slices.
async fn create_topics(t: &Topics, parts: i32) {
    t.create(parts).await;
    let opts = client_options();
    riskstream::kafka::ensure_changelog(&brokers(), &opts, &t.input, &t.changelog(), parts)
        .await
        .expect("create the changelog");
    let slices = riskstream::drift::sidecar::global::slices_topic(&t.drift);
    riskstream::kafka::ensure_topics(&brokers(), &opts, &[&slices], 1)
        .await
        .expect("create the slices topic");
}

/// Grants `rows` to every scenario's user but the one without that row:
/// one kafka-acls call per row (each user gets the row on every scenario's
/// names; only its own scenario's matter to it).
fn grant_all_but_one(
    broker: &AuthBroker,
    rows: &[Row],
    scenarios: &[(String, Topics)],
) -> Vec<(String, std::process::Child)> {
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let mut args: Vec<String> = vec!["acls".into(), "--add".into()];
            for (j, (user, _)) in scenarios.iter().enumerate() {
                if j != i {
                    args.extend(["--allow-principal".into(), format!("User:{user}")]);
                }
            }
            args.extend(["--operation".into(), row.operation.clone()]);
            args.extend(["--resource-pattern-type".into(), row.pattern.clone()]);
            let names: HashSet<String> = scenarios
                .iter()
                .map(|(_, t)| substitute(&row.name, t))
                .collect();
            let flag = if row.resource == "Group" {
                "--group"
            } else {
                "--topic"
            };
            for n in names {
                args.extend([flag.to_string(), n]);
            }
            (format!("grant {row:?}"), broker.kafka(&args))
        })
        .collect()
}

/// Grants README's rows for `t` to the main user with deploy/kafka-acls.sh;
/// checks first that the script's list is README's.
fn grant_with_deploy_script(rows: &[Row], t: &Topics) -> std::process::Child {
    let settings = [
        format!("input={}", t.input),
        format!("scored={}", t.output),
        format!("dlq={}", t.dlq),
        format!("labels={}", t.labels),
        format!("drift={}", t.drift),
        format!("group={}", t.group),
    ];
    let script = repo().join("deploy/kafka-acls.sh");
    let dry = Command::new(&script)
        .arg("--dry-run")
        .arg(format!("User:{USER}"))
        .args(&settings)
        .output()
        .expect("deploy/kafka-acls.sh --dry-run");
    let listed: Vec<String> = String::from_utf8_lossy(&dry.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let want: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {}",
                r.resource,
                substitute(&r.name, t),
                r.pattern,
                r.operation
            )
        })
        .collect();
    assert_eq!(listed, want, "deploy/kafka-acls.sh grants README's table");
    Command::new(&script)
        .arg(format!("User:{USER}"))
        .args(&settings)
        .arg("--")
        .env(
            "KAFKA_ACLS",
            format!("{} acls", repo().join("scripts/kafka.sh").display()),
        )
        .env("BROKER_AUTH", "sasl")
        .env("BROKER_PORT", PORT.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("deploy/kafka-acls.sh")
}

/// The ACLs the super user's CLI lists for `principal`.
fn acls_of(principal: &str) -> usize {
    let o = Command::new(repo().join("scripts/kafka.sh"))
        .args(["acls", "--list", "--principal", principal])
        .env("BROKER_AUTH", "sasl")
        .env("BROKER_PORT", PORT.to_string())
        .output()
        .expect("acls --list");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains(&format!("principal={principal},")))
        .count()
}

fn assert_no_secret(what: &str, text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "a password appears in {what}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_acls_are_enough_each_is_needed_and_no_secret_leaks() {
    let t0 = Instant::now();
    let rows = readme_acls();
    let password = format!("Main-{}", unique("pw").replace('-', ""));
    // One user per row, missing that row; and a wrong password.
    let drop_users: Vec<(String, String)> = (0..rows.len())
        .map(|i| {
            (
                format!("without-{i}"),
                format!("Drop-{i}-{}", unique("pw").replace('-', "")),
            )
        })
        .collect();
    let users: String = std::iter::once(format!("{USER}={password}"))
        .chain(drop_users.iter().map(|(u, p)| format!("{u}={p}")))
        .collect::<Vec<_>>()
        .join(" ");
    let broker = AuthBroker::start(&users);
    use_broker(&format!("127.0.0.1:{PORT}"));
    use_client_options(BTreeMap::from([
        (
            "security.protocol".to_string(),
            "SASL_PLAINTEXT".to_string(),
        ),
        ("sasl.mechanism".to_string(), "SCRAM-SHA-512".to_string()),
        ("sasl.username".to_string(), "admin".to_string()),
        ("sasl.password".to_string(), broker.admin_password.clone()),
    ]));
    let main = Topics::new("auth");
    let scenarios: Vec<(String, Topics)> = drop_users
        .iter()
        .map(|(u, _)| (u.clone(), Topics::new("noacl")))
        .collect();
    create_topics(&main, PARTS).await;
    for (_, t) in &scenarios {
        create_topics(t, 1).await;
    }
    eprintln!(
        "broker, users and topics ready in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let mut grants = grant_all_but_one(&broker, &rows, &scenarios);
    grants.push((
        "deploy/kafka-acls.sh".into(),
        grant_with_deploy_script(&rows, &main),
    ));
    all_succeed(grants);
    assert_eq!(
        acls_of(&format!("User:{USER}")),
        rows.len(),
        "the main principal holds exactly the README's ACLs"
    );
    eprintln!(
        "broker, users, topics and ACLs ready in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    let mut secrets: Vec<&str> = vec![password.as_str(), broker.admin_password.as_str()];
    secrets.extend(drop_users.iter().map(|(_, p)| p.as_str()));
    each_missing_acl_stops_the_worker(&rows, &scenarios, &drop_users, &secrets).await;
    eprintln!(
        "missing ACLs checked at {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    the_listed_acls_score_commit_dead_letter_and_restore(&main, &password, &broker.ca, &secrets)
        .await;
    eprintln!("done in {:.1} s", t0.elapsed().as_secs_f64());
}

/// Every scenario's worker (one ACL missing each) and one with a wrong
/// password, all at once: each exits 1 within 60 s naming what is missing.
async fn each_missing_acl_stops_the_worker(
    rows: &[Row],
    scenarios: &[(String, Topics)],
    drop_users: &[(String, String)],
    secrets: &[&str],
) {
    // Input for each: a worker that did not stop would score it.
    for (_, t) in scenarios {
        produce_transactions(&t.input, &txs(10, 5)).await;
    }
    let mut workers: Vec<Worker> = scenarios
        .iter()
        .zip(drop_users)
        .map(|((user, t), (_, pw))| {
            start_worker(
                t,
                &Login {
                    user,
                    password: pw,
                    ca: None,
                },
            )
        })
        .collect();
    let wrong = format!("Wrong-{}", unique("pw").replace('-', ""));
    let mut impostor = start_worker(
        &scenarios[0].1,
        &Login {
            user: USER,
            password: &wrong,
            ca: None,
        },
    );
    for (i, w) in workers.iter_mut().enumerate() {
        let code = w.wait(Duration::from_secs(60));
        let out = output_of(w);
        assert_eq!(
            code,
            Some(1),
            "without {:?} the worker stops with status 1; output:\n{out}",
            rows[i]
        );
        let want = missing_message(&rows[i], &scenarios[i].1);
        assert!(
            out.contains(&want),
            "without {:?} the error names it ({want}); output:\n{out}",
            rows[i]
        );
        assert_no_secret("a refused worker's output", &out, secrets);
    }
    let code = impostor.wait(Duration::from_secs(60));
    let out = output_of(&impostor);
    assert_eq!(
        code,
        Some(1),
        "a wrong password stops the worker; output:\n{out}"
    );
    assert!(
        out.contains("Authentication") || out.contains("authentication"),
        "says why: {out}"
    );
    assert_no_secret(
        "the wrong password's output",
        &out,
        &[secrets, &[wrong.as_str()]].concat(),
    );
}

/// The main principal: scores, dead-letters, commits over SASL_PLAINTEXT;
/// restarted over SASL_SSL it restores from the changelog and scores the
/// new records as offline.
async fn the_listed_acls_score_commit_dead_letter_and_restore(
    t: &Topics,
    password: &str,
    ca: &Path,
    secrets: &[&str],
) {
    let all = txs(10, 400);
    let (history, new) = all.split_at(300);
    produce_transactions(&t.input, history).await;
    produce_raw(
        &t.input,
        &[(Some(b"poison".to_vec()), b"not avro".to_vec())],
    )
    .await;
    let login = Login {
        user: USER,
        password,
        ca: None,
    };
    let mut a = start_worker(t, &login);
    let want = history.len() as i64 + 1;
    assert!(
        wait_for(Duration::from_secs(90), || t.total_committed(PARTS) == want),
        "{want} records committed; log:\n{}",
        a.log_text()
    );
    let (_, m) = http_get(&a.log_text(), "/metrics");
    assert_no_secret("/metrics", &m, secrets);
    assert_eq!(
        metric(&m, "riskstream_records_dead_lettered_total"),
        1.0,
        "one dead letter; {m}"
    );
    a.stop_cleanly(Duration::from_secs(30));
    let dlq = read_topic(&t.dlq, 1, Duration::from_secs(5));
    assert_eq!(dlq.len(), 1, "the poison record is dead-lettered");
    assert_eq!(dlq[0].payload.as_deref(), Some(&b"not avro"[..]));

    produce_transactions(&t.input, new).await;
    let tls = Login {
        user: USER,
        password,
        ca: Some(ca),
    };
    let mut b = start_worker(t, &tls);
    let want = all.len() as i64 + 1;
    assert!(
        wait_for(Duration::from_secs(90), || t.total_committed(PARTS) == want),
        "{want} records committed over SASL_SSL; log:\n{}",
        b.log_text()
    );
    let (_, m) = http_get(&b.log_text(), "/metrics");
    assert_no_secret("/metrics", &m, secrets);
    assert_eq!(
        metric(&m, "riskstream_state_restores_total{reason=\"changelog\"}"),
        f64::from(PARTS),
        "every partition restored from the changelog; {m}"
    );
    b.stop_cleanly(Duration::from_secs(30));

    let out = scored(&t.output, all.len(), Duration::from_secs(10));
    assert_eq!(lost(&all, &out), 0, "every transaction scored");
    let offline = offline_scores_of(&all);
    let new_ids: HashSet<&str> = new.iter().map(|t| t.transaction_id.as_str()).collect();
    let differ = out
        .iter()
        .filter(|(_, s)| new_ids.contains(s.transaction_id.as_str()))
        .filter(|(_, s)| (offline[&s.transaction_id] - s.score).abs() > 1e-5)
        .count();
    assert_eq!(
        differ, 0,
        "after the restore the new records score as offline"
    );
    for w in [&a, &b] {
        let log = output_of(w);
        assert_no_secret("the worker's log", &log, secrets);
        assert!(
            !log.to_ascii_lowercase().contains("authorization"),
            "no authorization error with the README's ACLs:\n{log}"
        );
    }
}
