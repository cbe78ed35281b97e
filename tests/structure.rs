//! The shape of `worker/src`, checked: the import graph of its top-level
//! modules has no circles and follows `lib.rs`'s order, the submodules of
//! every module import each other in no circle either (paths through
//! `crate::`, `super::` and `self::`, grouped uses and re-exports
//! followed), no non-test function is over 80 lines, no
//! `too_many_arguments` allow is left, and the tests of tier 2 sit where
//! scripts/test.sh runs them. Reads the sources; needs no broker.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/worker/src");

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("readable source dir") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The file's non-test code: `tests.rs` files are tests; elsewhere the
/// code before the first `#[cfg(test)]` line.
fn non_test_code(p: &Path) -> String {
    if p.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let text = std::fs::read_to_string(p).expect("readable source");
    let mut out = String::new();
    for line in text.lines() {
        if line.trim() == "#[cfg(test)]" {
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The module a file defines, as its path from the crate root:
/// `drift/sidecar/task.rs` → `[drift, sidecar, task]`, `drift/mod.rs` →
/// `[drift]`, `lib.rs` → `[]` (None for `main.rs`, another crate).
fn module_path(p: &Path) -> Option<Vec<String>> {
    let rel = p.strip_prefix(SRC).ok()?;
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let file = parts.pop()?;
    match file.as_str() {
        "main.rs" if parts.is_empty() => return None,
        "lib.rs" if parts.is_empty() => {}
        "mod.rs" => {}
        f => parts.push(f.trim_end_matches(".rs").to_string()),
    }
    Some(parts)
}

/// A line without its `//` comment and with string and char literals blanked.
fn code_only(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_str = false;
                    out.push('"');
                }
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                out.push('"');
            }
            '/' if chars.peek() == Some(&'/') => break,
            // A char literal such as '{' or '\'' (lifetimes have no closing quote).
            '\'' => {
                let rest: String = chars.clone().take(3).collect();
                let close = if rest.starts_with('\\') { 2 } else { 1 };
                if rest.chars().nth(close) == Some('\'') {
                    for _ in 0..=close {
                        chars.next();
                    }
                    out.push_str("' '");
                } else {
                    out.push('\'');
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Every source file's module path and non-test code.
fn sources() -> Vec<(Vec<String>, String)> {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    files
        .iter()
        .filter_map(|p| {
            let code: Vec<String> = non_test_code(p).lines().map(code_only).collect();
            Some((module_path(p)?, code.join("\n")))
        })
        .collect()
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The paths of a use tree starting at `i` (`a::b::{c, d::e}` gives
/// `[a, b, c]` and `[a, b, d, e]`), each as its segments.
fn use_tree(s: &[char], i: &mut usize) -> Vec<Vec<String>> {
    while s.get(*i).is_some_and(|c| c.is_whitespace()) {
        *i += 1;
    }
    if s.get(*i) == Some(&'{') {
        *i += 1;
        let mut out = Vec::new();
        loop {
            while s.get(*i).is_some_and(|c| c.is_whitespace() || *c == ',') {
                *i += 1;
            }
            match s.get(*i) {
                None => break,
                Some('}') => {
                    *i += 1;
                    break;
                }
                Some(_) => {
                    let at = *i;
                    out.extend(use_tree(s, i));
                    if *i == at {
                        *i += 1; // not a path (`as`, `*`): skip a character
                    }
                }
            }
        }
        return out;
    }
    let start = *i;
    while s.get(*i).is_some_and(|c| is_ident(*c)) {
        *i += 1;
    }
    let ident: String = s[start..*i].iter().collect();
    if ident.is_empty() {
        return vec![Vec::new()];
    }
    if s.get(*i) == Some(&':') && s.get(*i + 1) == Some(&':') {
        *i += 2;
        return use_tree(s, i)
            .into_iter()
            .map(|mut p| {
                p.insert(0, ident.clone());
                p
            })
            .collect();
    }
    vec![vec![ident]]
}

/// Every path in `code` that starts at `crate::`, `super::` or `self::`,
/// made absolute for the module at `at`.
fn absolute_paths(at: &[String], code: &str) -> Vec<Vec<String>> {
    let s: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let boundary = i == 0 || !(is_ident(s[i - 1]) || s[i - 1] == ':' || s[i - 1] == '$');
        let starts = ["crate::", "super::", "self::"]
            .iter()
            .any(|k| s[i..].starts_with(&k.chars().collect::<Vec<_>>()));
        if !(boundary && starts) {
            i += 1;
            continue;
        }
        for path in use_tree(&s, &mut i) {
            let mut base: Vec<String> = at.to_vec();
            let mut rest = path.as_slice();
            match rest.first().map(String::as_str) {
                Some("crate") => {
                    base.clear();
                    rest = &rest[1..];
                }
                Some("self") => rest = &rest[1..],
                _ => {
                    while rest.first().is_some_and(|r| r == "super") {
                        base.pop();
                        rest = &rest[1..];
                    }
                }
            }
            base.extend(rest.iter().filter(|r| *r != "self").cloned());
            out.push(base);
        }
    }
    out
}

/// Per module, the names its file re-exports from each of its children
/// (`pub use monitor::DriftMonitor;` in `drift/mod.rs`: DriftMonitor → monitor).
fn re_exports(srcs: &[(Vec<String>, String)]) -> BTreeMap<Vec<String>, BTreeMap<String, String>> {
    let children = |m: &[String]| -> BTreeSet<String> {
        srcs.iter()
            .filter(|(p, _)| p.len() == m.len() + 1 && p.starts_with(m))
            .map(|(p, _)| p[m.len()].clone())
            .collect()
    };
    let mut out: BTreeMap<Vec<String>, BTreeMap<String, String>> = BTreeMap::new();
    for (m, code) in srcs {
        let kids = children(m);
        let s: Vec<char> = code.chars().collect();
        for (pos, _) in code.match_indices("pub use ") {
            let mut i = code[..pos].chars().count() + "pub use ".len();
            for path in use_tree(&s, &mut i) {
                let path: Vec<&String> = path.iter().filter(|p| *p != "self").collect();
                if let (Some(first), Some(last)) = (path.first(), path.last()) {
                    if kids.contains(*first) {
                        out.entry(m.clone())
                            .or_default()
                            .insert((*last).clone(), (*first).clone());
                    }
                }
            }
        }
    }
    out
}

/// The module graph at every level: for each module with submodules, the
/// uses among its children (`drift` → `{monitor → {reference, ...}, ...}`;
/// the crate root is `[]`). A path into another module counts as a use of
/// the child of the modules' common ancestor that holds it, re-exports
/// followed one level; a module using its own ancestor's items is no edge.
fn module_graphs(
    srcs: &[(Vec<String>, String)],
) -> BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> {
    let modules: BTreeSet<Vec<String>> = srcs.iter().map(|(p, _)| p.clone()).collect();
    let exports = re_exports(srcs);
    let mut graphs: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for m in &modules {
        if let Some((last, parent)) = m.split_last() {
            graphs
                .entry(parent.to_vec())
                .or_default()
                .entry(last.clone())
                .or_default();
        }
    }
    for (at, code) in srcs {
        for path in absolute_paths(at, code) {
            // The deepest module the path names, then a re-exported item's child.
            let mut target: Vec<String> = Vec::new();
            for seg in &path {
                let mut next = target.clone();
                next.push(seg.clone());
                if modules.contains(&next) {
                    target = next;
                    continue;
                }
                if let Some(child) = exports.get(&target).and_then(|e| e.get(seg)) {
                    target.push(child.clone());
                }
                break;
            }
            let common = at.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common < at.len() && common < target.len() {
                graphs
                    .entry(at[..common].to_vec())
                    .or_default()
                    .entry(at[common].clone())
                    .or_default()
                    .insert(target[common].clone());
            }
        }
    }
    graphs
}

/// (module, uses) of the crate's top-level modules.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    module_graphs(&sources())
        .remove(&Vec::new())
        .unwrap_or_default()
}

/// A circle in the graph, if any (as the path that closes it).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for next in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for n in graph.keys() {
        if let Some(c) = visit(n, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_module_graph_has_no_circles() {
    let g = import_graph();
    assert!(g.len() >= 10, "modules found: {:?}", g.keys());
    // The floor imports no stage.
    for stage in ["source", "scoring", "sink", "pipeline", "drift", "config"] {
        assert!(!g["message"].contains(stage), "message imports {stage}");
        assert!(!g["metrics"].contains(stage), "metrics imports {stage}");
    }
    if let Some(c) = find_cycle(&g) {
        panic!("import circle: {}\n{g:#?}", c.join(" → "));
    }
}

/// The module order `lib.rs` documents, floor first.
fn documented_order() -> Vec<String> {
    let lib = std::fs::read_to_string(format!("{SRC}/lib.rs")).expect("lib.rs");
    lib.lines()
        .filter_map(|l| l.strip_prefix("//! - [`"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn each_module_imports_only_modules_below_it_in_the_documented_order() {
    let g = import_graph();
    let order = documented_order();
    let mut missing: Vec<&String> = g.keys().filter(|m| !order.contains(m)).collect();
    missing.sort();
    assert!(
        missing.is_empty(),
        "modules not in lib.rs's list: {missing:?}"
    );
    for (m, uses) in &g {
        let at = order.iter().position(|o| o == m).unwrap_or(0);
        for u in uses {
            let there = order.iter().position(|o| o == u).unwrap_or(usize::MAX);
            assert!(there < at, "{m} imports {u}, which lib.rs lists after it");
        }
    }
}

#[test]
fn the_cycle_finder_finds_a_planted_circle() {
    let mut g = import_graph();
    g.entry("message".into())
        .or_default()
        .insert("pipeline".into());
    assert!(find_cycle(&g).is_some());
}

#[test]
fn no_module_has_submodules_that_import_each_other_in_a_circle() {
    let graphs = module_graphs(&sources());
    assert!(
        graphs
            .get(&vec!["drift".to_string()])
            .is_some_and(|g| g.len() >= 8),
        "drift's submodules: {:?}",
        graphs.get(&vec!["drift".to_string()])
    );
    for (m, g) in &graphs {
        if let Some(c) = find_cycle(g) {
            panic!(
                "import circle in {}: {}\n{g:#?}",
                m.join("::"),
                c.join(" → ")
            );
        }
    }
}

#[test]
fn super_self_and_re_exported_paths_are_followed_to_a_circle() {
    let src = |path: &[&str], code: &str| {
        (
            path.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            code.to_string(),
        )
    };
    let srcs = vec![
        src(&[], "pub mod a;"),
        src(
            &["a"],
            "pub mod b;\npub mod x;\npub mod y;\npub use y::{Thing, Other as O};",
        ),
        // x uses y through a's re-export, y uses x through self:: and
        // super:: in a grouped, multi-line use.
        src(&["a", "x"], "use super::Thing;"),
        src(
            &["a", "y"],
            "use super::{\n    x::{self, g},\n};\nfn f() { self::inner::h(); }",
        ),
        src(&["a", "y", "inner"], "pub fn h() {}"),
        src(&["a", "b"], "pub mod z;"),
        src(
            &["a", "b", "z"],
            "use super::super::x::g; use crate::a::b::Local;",
        ),
    ];
    let graphs = module_graphs(&srcs);
    let a = &graphs[&vec!["a".to_string()]];
    assert_eq!(a["x"], BTreeSet::from(["y".to_string()]));
    assert_eq!(a["y"], BTreeSet::from(["x".to_string()]));
    assert_eq!(a["b"], BTreeSet::from(["x".to_string()]));
    assert!(find_cycle(a).is_some(), "{a:?}");
    // Within y, its own child is no edge; the root sees no circle.
    assert!(find_cycle(&graphs[&Vec::new()]).is_none());
}

/// (file, line, name, length) of every non-test function.
fn functions() -> Vec<(PathBuf, usize, String, usize)> {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    let mut out = Vec::new();
    for p in files {
        let lines: Vec<String> = non_test_code(&p).lines().map(code_only).collect();
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim_start();
            let Some(pos) = t.find("fn ") else { continue };
            let head = &t[..pos];
            let is_fn = head.split_whitespace().all(|w| {
                [
                    "pub",
                    "pub(crate)",
                    "pub(super)",
                    "async",
                    "const",
                    "unsafe",
                ]
                .contains(&w)
            });
            if !is_fn {
                continue;
            }
            let name: String = t[pos + 3..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let mut depth = 0i32;
            let mut opened = false;
            for (j, l2) in lines.iter().enumerate().skip(i) {
                if !opened && l2.contains(';') && !l2.contains('{') {
                    break;
                }
                for c in l2.chars() {
                    match c {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
                if opened && depth <= 0 {
                    out.push((p.clone(), i + 1, name.clone(), j - i + 1));
                    break;
                }
            }
        }
    }
    out
}

#[test]
fn no_function_is_over_80_lines() {
    let fns = functions();
    assert!(fns.len() > 300, "functions found: {}", fns.len());
    let long: Vec<String> = fns
        .iter()
        .filter(|f| f.3 > 80)
        .map(|(p, l, n, len)| format!("{}:{l} {n} ({len} lines)", p.display()))
        .collect();
    assert!(
        long.is_empty(),
        "functions over 80 lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn no_too_many_arguments_allow_is_left() {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    for p in files {
        let text = std::fs::read_to_string(&p).expect("readable source");
        assert!(
            !text.contains("clippy::too_many_arguments"),
            "{} allows too_many_arguments",
            p.display()
        );
    }
}

/// The lines of `text` that gate tests on the `external-tests` feature
/// (test tier 2, docs/testing.md) other than as scripts/test.sh expects:
/// `#[cfg(feature = "external-tests")]` on a `mod external` (doc comments
/// and attributes between them allowed), and every `mod external` so gated.
/// The one other use allowed is
/// `#[cfg_attr(not(feature = "external-tests"), allow(dead_code))]`.
fn misplaced_tier_gates(text: &str) -> Vec<String> {
    const FEATURE: &str = "feature = \"external-tests\"";
    const GATE: &str = "#[cfg(feature = \"external-tests\")]";
    const DEAD: &str = "#[cfg_attr(not(feature = \"external-tests\"), allow(dead_code))]";
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let decoration = |l: &str| l.starts_with("#[") || l.starts_with("//");
    let mut bad = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let next = lines[i + 1..].iter().find(|l| !decoration(l));
        let gates_module = next.is_some_and(|n| n.starts_with("mod external {"));
        let code = !l.starts_with("//");
        if code && l.contains(FEATURE) && !(*l == GATE && gates_module || *l == DEAD) {
            bad.push(format!("line {}: {l}", i + 1));
        }
        if l.starts_with("mod external") {
            let mut above = lines[..i].iter().rev().take_while(|a| decoration(a));
            if !above.any(|a| *a == GATE) {
                bad.push(format!("line {}: {l} without {GATE}", i + 1));
            }
        }
    }
    bad
}

/// A test that needs a system outside the repository is tier 2: in a test
/// file that is tier 2 as a whole (a `[[test]]` entry in Cargo.toml that
/// requires the `external-tests` feature), or in a `mod external` behind
/// `#[cfg(feature = "external-tests")]`, which scripts/test.sh runs in
/// tier 2 (filter `external::`) and leaves out of tier 1. A test gated any
/// other way would run in neither tier.
#[test]
fn tier_two_tests_sit_where_scripts_test_sh_runs_them() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("tests"), &mut files);
    rust_files(Path::new(SRC), &mut files);
    let mut modules = 0;
    let mut bad = Vec::new();
    for p in &files {
        let text = std::fs::read_to_string(p).expect("readable source");
        modules += text
            .lines()
            .filter(|l| l.trim() == "mod external {")
            .count();
        bad.extend(
            misplaced_tier_gates(&text)
                .into_iter()
                .map(|b| format!("{}: {b}", p.display())),
        );
    }
    assert!(
        bad.is_empty(),
        "tier-2 gates scripts/test.sh would miss:\n{}",
        bad.join("\n")
    );
    // schema_registry.rs and metrics_exposition.rs have one each.
    assert!(modules >= 2, "{modules} `mod external` found");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    assert!(
        manifest.contains("required-features = [\"external-tests\"]"),
        "no tier-2 test target in Cargo.toml"
    );
}

#[test]
fn the_tier_gate_check_finds_a_misplaced_gate() {
    let good = "/// `#[cfg(feature = \"external-tests\")]` in a comment.\n\
                #[cfg(feature = \"external-tests\")]\n/// Doc.\nmod external {\n}\n\
                #[cfg_attr(not(feature = \"external-tests\"), allow(dead_code))]\nstruct X;\n";
    assert!(
        misplaced_tier_gates(good).is_empty(),
        "{:?}",
        misplaced_tier_gates(good)
    );
    let on_a_test = "#[cfg(feature = \"external-tests\")]\n#[test]\nfn needs_kafka() {}\n";
    assert_eq!(misplaced_tier_gates(on_a_test).len(), 1);
    let ungated = "#[cfg(test)]\nmod external {\n}\n";
    assert_eq!(misplaced_tier_gates(ungated).len(), 1);
}
