//! The modules of `proxy/src` import each other without cycles, so the tree reads one way:
//! fronts → core → layout → backends.
//!
//! Every `crate::…`, `super::…` and `self::…` path outside test modules is an import. An import
//! from module `a::x::…` of module `a::y::…` is an edge `x → y` among the children of `a` (the
//! two modules' lowest common ancestor); a module's imports of its own ancestors or
//! descendants are its internals and no edge. Among the children of every module, the edges
//! must form no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type ModulePath = Vec<String>;

/// Every `.rs` file under `dir`, with its module path.
fn modules(dir: &Path) -> BTreeMap<ModulePath, PathBuf> {
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = std::fs::read_dir(&current).expect("readable source directory");
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let relative = path.strip_prefix(dir).expect("under src");
            let mut segments: ModulePath = relative
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                segments.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                segments.pop();
            }
            if segments.is_empty() && path.file_name().and_then(|n| n.to_str()) == Some("main.rs") {
                // The binary is its own crate.
                continue;
            }
            found.insert(segments, path);
        }
    }
    found
}

/// The source without comments and without its `#[cfg(test)]` module.
fn code_of(source: &str) -> String {
    let source = match source.find("#[cfg(test)]\nmod tests") {
        Some(at) => &source[..at],
        None => source,
    };
    source
        .lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths of a use tree starting at `rest` (just after a `crate::`, `super::` or
/// `self::`), each as its segments.
fn use_tree(rest: &str) -> Vec<Vec<String>> {
    fn parse(chars: &[char], at: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let mut path = prefix.to_vec();
        loop {
            while *at < chars.len() && chars[*at].is_whitespace() {
                *at += 1;
            }
            if *at < chars.len() && chars[*at] == '{' {
                *at += 1;
                loop {
                    parse(chars, at, &path, out);
                    while *at < chars.len() && (chars[*at].is_whitespace() || chars[*at] == ',') {
                        *at += 1;
                    }
                    if *at >= chars.len() || chars[*at] == '}' {
                        *at += 1;
                        return;
                    }
                }
            }
            let start = *at;
            while *at < chars.len() && (chars[*at].is_alphanumeric() || chars[*at] == '_') {
                *at += 1;
            }
            if start == *at {
                out.push(path);
                return;
            }
            path.push(chars[start..*at].iter().collect());
            let next: String = chars[*at..chars.len().min(*at + 2)].iter().collect();
            if next == "::" {
                *at += 2;
                continue;
            }
            out.push(path);
            // `as alias` and anything else up to the separator belong to this path.
            while *at < chars.len() && !matches!(chars[*at], ',' | '}' | ';') {
                if chars[*at] == '{' || chars[*at] == '(' {
                    return;
                }
                *at += 1;
            }
            return;
        }
    }
    let chars: Vec<char> = rest.chars().take(4000).collect();
    let mut out = Vec::new();
    parse(&chars, &mut 0, &[], &mut out);
    out
}

/// The modules `module` (whose file is `source`) imports.
fn imports(module: &ModulePath, source: &str) -> Vec<ModulePath> {
    let code = code_of(source);
    let mut found = Vec::new();
    for (anchor, base) in [
        ("crate::", Vec::new()),
        ("super::", module[..module.len().saturating_sub(1)].to_vec()),
        ("self::", module.clone()),
    ] {
        let mut from = 0;
        while let Some(at) = code[from..].find(anchor) {
            let start = from + at;
            from = start + anchor.len();
            let before = code[..start].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            for path in use_tree(&code[from..]) {
                let mut full = base.clone();
                full.extend(path);
                found.push(full);
            }
        }
    }
    found
}

/// The longest prefix of `path` that is a module.
fn resolve(path: &ModulePath, known: &BTreeSet<ModulePath>) -> Option<ModulePath> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|prefix| known.contains(prefix))
}

/// Cycles among one module's children, each as its members.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Reachability by depth-first search; a node that reaches itself is on a cycle, and
    // nodes that reach each other share one.
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut pending: Vec<&String> = edges.get(from).into_iter().flatten().collect();
        while let Some(node) = pending.pop() {
            if seen.insert(node.clone()) {
                pending.extend(edges.get(node).into_iter().flatten());
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> =
        edges.keys().map(|node| (node, reach(node))).collect();
    let mut groups: Vec<Vec<String>> = Vec::new();
    for (node, reached) in &reachable {
        if !reached.contains(*node) || groups.iter().any(|g| g.contains(node)) {
            continue;
        }
        let group = reached
            .iter()
            .filter(|other| reachable.get(other).is_some_and(|r| r.contains(*node)))
            .cloned()
            .collect();
        groups.push(group);
    }
    groups
}

#[test]
fn modules_import_each_other_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = modules(&src);
    let known: BTreeSet<ModulePath> = files.keys().cloned().collect();
    // Per parent module: the edges among its children, with one import that makes each.
    let mut graphs: BTreeMap<ModulePath, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let mut witnesses: BTreeMap<(ModulePath, String, String), String> = BTreeMap::new();
    for (module, file) in &files {
        let source = std::fs::read_to_string(file).expect("readable source");
        for imported in imports(module, &source) {
            let Some(target) = resolve(&imported, &known) else {
                continue;
            };
            let common = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if common == module.len() || common == target.len() {
                continue; // an ancestor or a descendant
            }
            let (from, to) = (module[common].clone(), target[common].clone());
            let parent = module[..common].to_vec();
            graphs
                .entry(parent.clone())
                .or_default()
                .entry(from.clone())
                .or_default()
                .insert(to.clone());
            witnesses
                .entry((parent, from, to))
                .or_insert_with(|| format!("{} uses {}", module.join("::"), imported.join("::")));
        }
    }
    let mut found = Vec::new();
    for (parent, edges) in &graphs {
        for cycle in cycles(edges) {
            let why: Vec<String> = cycle
                .iter()
                .flat_map(|from| cycle.iter().map(move |to| (from, to)))
                .filter_map(|(from, to)| witnesses.get(&(parent.clone(), from.clone(), to.clone())))
                .cloned()
                .collect();
            found.push(format!(
                "in `crate::{}`: {} ({})",
                parent.join("::"),
                cycle.join(" ↔ "),
                why.join("; ")
            ));
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn the_parser_reads_use_trees() {
    assert_eq!(
        use_tree("core::{Answer, get::is_processing}, x;"),
        vec![
            vec!["core".to_string(), "Answer".into()],
            vec!["core".to_string(), "get".into(), "is_processing".into()],
        ]
    );
    assert_eq!(
        use_tree("keys::Scope) -> bool"),
        vec![vec!["keys".to_string(), "Scope".into()]]
    );
    let found = imports(
        &vec!["core".into(), "get".into()],
        "use super::l1::L1Record;\n// crate::worker\nfn f() { crate::backend::queue::WORKER_SILENCE }\n",
    );
    assert_eq!(
        found,
        vec![
            vec![
                "backend".to_string(),
                "queue".into(),
                "WORKER_SILENCE".into()
            ],
            vec!["core".to_string(), "l1".into(), "L1Record".into()],
        ]
    );
}

#[test]
fn cycles_are_found_and_chains_are_not() {
    let graph = |edges: &[(&str, &str)]| {
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, to) in edges {
            graph
                .entry(from.to_string())
                .or_default()
                .insert(to.to_string());
        }
        graph
    };
    assert!(cycles(&graph(&[("front", "core"), ("core", "layout")])).is_empty());
    assert_eq!(
        cycles(&graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")])),
        vec![vec!["a".to_string(), "b".into(), "c".into()]]
    );
}
