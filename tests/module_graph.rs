//! The layers of `src/` depend on each other one way only: no import cycle,
//! direct or through any other module, passes through the request flow
//! (`gateway`), the management API (`api`), the authentication policy
//! (`auth`), forwarding (`proxy`), connections (`server`) or error replies
//! (`error`). Read from the `crate::…` paths of each module's files, so a new
//! import that closes a cycle fails here, with the cycle named.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const LAYERS: [&str; 6] = ["gateway", "api", "auth", "proxy", "server", "error"];

/// Top-level module → the top-level modules its files name with `crate::`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let first = rel.components().next().unwrap().as_os_str();
            let module = first.to_string_lossy().trim_end_matches(".rs").to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            // Unit tests may reach anywhere; only the shipped code counts.
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let set = deps.entry(module.clone()).or_default();
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    set.insert(name);
                }
            }
            // `use crate::{a, b::c}` names several at once.
            for (i, _) in code.match_indices("use crate::{") {
                let rest = &code[i + "use crate::{".len()..];
                let list = rest.split('}').next().unwrap_or("");
                for item in list.split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != module {
                        set.insert(name);
                    }
                }
            }
        }
    }
    deps
}

/// Every module reachable from `from`, through any module.
fn reachable(deps: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeMap<String, String> {
    // module → the module it was reached from, for naming the path.
    let mut seen = BTreeMap::new();
    let mut todo = vec![from.to_string()];
    while let Some(m) = todo.pop() {
        for next in deps.get(&m).into_iter().flatten() {
            if !seen.contains_key(next) {
                seen.insert(next.clone(), m.clone());
                todo.push(next.clone());
            }
        }
    }
    seen
}

#[test]
fn no_import_cycle_between_the_layers() {
    let deps = graph();
    for layer in LAYERS {
        assert!(deps.contains_key(layer), "no module {layer} under src/");
    }
    for layer in LAYERS {
        let seen = reachable(&deps, layer);
        if seen.contains_key(layer) {
            let mut path = vec![layer.to_string()];
            let mut at = seen[layer].clone();
            while at != layer && path.len() <= LAYERS.len() {
                path.push(at.clone());
                at = seen[&at].clone();
            }
            path.push(layer.to_string());
            path.reverse();
            panic!("import cycle: {}", path.join(" -> "));
        }
    }
}

#[test]
fn the_graph_sees_the_imports_it_should() {
    let deps = graph();
    // The request flow uses the API, the policy and the proxy; the API does
    // not use the request flow.
    for used in ["api", "auth", "proxy", "server", "error"] {
        assert!(deps["gateway"].contains(used), "gateway -> {used}");
    }
    assert!(!deps["api"].contains("gateway"), "api -> gateway");
}
