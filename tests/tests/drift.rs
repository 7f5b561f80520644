//! What the docs and comments say against what is there, so that neither can drift:
//!
//! - The README's parts table: every file or folder a row names exists, and every source
//!   file of a part is named in its row (by its name or path; the tests' folders of one
//!   file per area, by the folder). `lib.rs`, `main.rs` and `mod.rs` need no mention.
//! - Every path from the repository's root the READMEs cite (`server/src/…`) exists.
//! - Every `triggers.<name>` the code, its comments and the READMEs cite is something
//!   the extension defines (a function, table, type or view in `sql/`, a Rust function
//!   it exports) or a setting it reads, or one of the data directory's files.

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

#[test]
fn every_path_the_readmes_cite_exists() {
    let mut missing = Vec::new();
    for readme in ["README.md", "benches/README.md"] {
        let text = std::fs::read_to_string(root().join(readme)).unwrap();
        // The parts table names files from each row's folder: its own tests check them.
        let text = match text.split_once("| part | folder | what it is |\n") {
            Some((before, after)) => {
                format!(
                    "{before}{}",
                    after.split_once("\n\n").map_or("", |(_, rest)| rest)
                )
            }
            None => text,
        };
        for word in text.split('`').skip(1).step_by(2) {
            let from_root = [
                "sql/",
                "extension/",
                "client/",
                "server/",
                "core/",
                "benches/",
                "tests/",
                "docs/",
                "scripts/",
            ];
            if is_path(word)
                && !word.ends_with('/')
                && from_root.iter().any(|d| word.starts_with(d))
                && !word.contains("--A--B")
                && !root().join(word).exists()
            {
                missing.push(format!("{readme}: {word}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "paths cited but not there:\n{}",
        missing.join("\n")
    );
}

/// Files named `triggers.*` the docs cite: the embedded cluster's (`auth`, `port`:
/// `server/src/embedded/data_dir.rs`), the secrets key beside the default data directory
/// (`.triggers.secrets-key`), the extension's library.
const FILES: [&str; 4] = ["auth", "port", "secrets", "so"];

/// Every file under `dir` whose name ends with one of `kinds`.
fn sources(dir: &str, kinds: &[&str]) -> Vec<PathBuf> {
    files(Path::new(dir))
        .into_iter()
        .filter(|f| kinds.iter().any(|k| f.to_str().unwrap().ends_with(k)))
        .collect()
}

/// The words after `prefix` in `text`, up to the first character not in a SQL name.
fn names_after<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.match_indices(prefix)
        .filter(|(at, _)| {
            // A whole word, not the end of a longer one.
            !text[..*at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(|(at, _)| {
            let rest = &text[at + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|n| n.starts_with(|c: char| c.is_ascii_lowercase() || c == '_'))
        .collect()
}

/// What the extension defines or reads, by name.
fn defined() -> BTreeSet<String> {
    let mut defined = BTreeSet::new();
    let read = |f: &PathBuf| std::fs::read_to_string(root().join(f)).unwrap();
    for f in sources("sql", &[".sql"])
        .iter()
        .chain(&sources("extension/proxy", &[".sql"]))
    {
        let text = read(f);
        for line in text.lines() {
            let upper = line.to_ascii_uppercase();
            let creates = ["FUNCTION", "TABLE", "TYPE", "VIEW", "SEQUENCE", "PROCEDURE"]
                .iter()
                .any(|k| {
                    upper.contains(&format!("CREATE {k}"))
                        || upper.contains(&format!("OR REPLACE {k}"))
                        || upper.contains(&format!("UNLOGGED {k}"))
                });
            if creates {
                defined.extend(
                    names_after(line, "triggers.")
                        .into_iter()
                        .take(1)
                        .map(String::from),
                );
            }
        }
        // Settings: what the SQL reads and sets.
        for prefix in [
            "current_setting('triggers.",
            "set_config('triggers.",
            "SET triggers.",
            "SET LOCAL triggers.",
        ] {
            defined.extend(names_after(&text, prefix).into_iter().map(String::from));
        }
    }
    for f in sources("extension/src", &[".rs"]) {
        let text = read(&f);
        // Functions the extension exports, and its settings.
        for part in text.split("#[pg_extern").skip(1) {
            if let Some(name) = names_after(part, "fn ").first() {
                defined.insert(name.to_string());
            }
        }
        defined.extend(
            names_after(&text, "\"triggers.")
                .into_iter()
                .map(String::from),
        );
    }
    defined
}

#[test]
fn every_name_the_code_and_docs_cite_in_the_schema_exists() {
    let defined = defined();
    assert!(defined.len() > 100, "{defined:?}");
    let mut cited = Vec::new();
    for dir in [
        "sql",
        "extension/src",
        "extension/proxy",
        "core",
        "client",
        "server/src",
        "benches",
        "tests",
    ] {
        cited.extend(sources(dir, &[".rs", ".sql", ".md"]));
    }
    cited.push(PathBuf::from("README.md"));
    let mut unknown = Vec::new();
    for f in cited {
        let text = std::fs::read_to_string(root().join(&f)).unwrap();
        for name in names_after(&text, "triggers.") {
            if !defined.contains(name) && !FILES.contains(&name) {
                unknown.push(format!("{}: triggers.{name}", f.display()));
            }
        }
    }
    unknown.sort();
    unknown.dedup();
    assert!(
        unknown.is_empty(),
        "cited but not defined by the extension:\n{}",
        unknown.join("\n")
    );
}
