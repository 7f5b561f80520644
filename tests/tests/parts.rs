//! The README's parts table against the tree, so that it cannot drift: every file or
//! folder a row names exists, and every source file of a part is named in its row (by
//! its name or path; the tests' folders of one file per area, by the folder).
//! `lib.rs`, `main.rs` and `mod.rs` need no mention.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each part's source folders, whose every file its row must name.
const SOURCES: [(&str, &[&str]); 7] = [
    ("extension", &["extension/src"]),
    ("SQL", &["sql"]),
    ("client", &["client/src", "client/benches"]),
    ("server", &["server/src", "server/assets"]),
    ("benches", &["benches/src"]),
    ("core", &["core/src", "core/benches"]),
    ("tests", &["tests/src", "tests/tests"]),
];

/// Folders of one file per area (the tests), which a row names as a whole.
const WHOLE_FOLDERS: [&str; 2] = ["extension/src/tests", "tests/tests"];

/// Files every crate has, which a row need not name.
const UNNAMED: [&str; 3] = ["lib.rs", "main.rs", "mod.rs"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every file under `dir`, as paths relative to the repository's root.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join(dir)).unwrap() {
        let entry = entry.unwrap();
        let path = dir.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The table's rows: (part, folder, the paths its text names between backticks).
fn rows() -> Vec<(String, String, BTreeSet<String>)> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let table = readme
        .split("| part | folder | what it is |\n")
        .nth(1)
        .expect("the README's parts table");
    table
        .lines()
        .skip(1)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.split(" | ").collect();
            let part = cells[0].trim_start_matches("| ").to_string();
            let folder = cells[1].trim_matches('`').to_string();
            let text = cells[2..].join(" | ");
            let named = text
                .split('`')
                .skip(1)
                .step_by(2)
                .filter(|t| is_path(t))
                .map(str::to_string)
                .collect();
            (part, folder, named)
        })
        .collect()
}

/// Whether a backticked word names a file or a folder (not a function, a flag or a route).
fn is_path(word: &str) -> bool {
    const KINDS: [&str; 9] = [
        ".rs", ".sql", ".js", ".css", ".html", ".svg", ".json", ".md", ".control",
    ];
    !word.contains(' ')
        && !word.starts_with(['-', '/'])
        && (word.ends_with('/') || KINDS.iter().any(|k| word.ends_with(k)))
}

#[test]
fn every_file_the_parts_table_names_exists() {
    let rows = rows();
    assert!(rows.len() >= SOURCES.len(), "{rows:?}");
    for (part, folder, named) in &rows {
        let under = files(Path::new(folder.trim_end_matches('/')));
        for name in named {
            let bare = name.trim_end_matches('/');
            let exists = root().join(bare).exists()
                || root().join(folder).join(bare).exists()
                || under
                    .iter()
                    .any(|f| f.ends_with(bare) || f.ancestors().any(|a| a.ends_with(bare)));
            assert!(
                exists,
                "the README's parts table ({part}) names `{name}`, which is not in {folder}"
            );
        }
    }
}

#[test]
fn the_parts_table_names_every_source_file() {
    let rows = rows();
    let mut missing = Vec::new();
    for (part, dirs) in SOURCES {
        let (_, _, named) = rows
            .iter()
            .find(|(p, _, _)| p == part)
            .unwrap_or_else(|| panic!("no row for {part}"));
        for dir in dirs {
            for file in files(Path::new(dir)) {
                let name = file.file_name().unwrap().to_str().unwrap();
                let parent = file.parent().unwrap();
                // By name or path ("hot_spots.rs", "benches/hot_spots.rs"), or, in a
                // folder of one file per area, by the folder.
                let by_name = named.contains(name) || named.iter().any(|n| file.ends_with(n));
                let by_folder = WHOLE_FOLDERS.iter().any(|f| parent == Path::new(f))
                    && named
                        .iter()
                        .any(|n| parent.ends_with(n.trim_end_matches('/')));
                if !UNNAMED.contains(&name) && !by_name && !by_folder {
                    missing.push(format!("{part}: {}", file.display()));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "files the README's parts table does not name:\n{}",
        missing.join("\n")
    );
}
