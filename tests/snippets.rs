//! Every Rust block of README.md and docs/*.md builds with exactly the dependencies the text
//! lists: each block is the `src/main.rs` of a package under `examples/readme-*`, byte for
//! byte, and the `toml` block before it (`[dependencies]` and its lines) is that package's
//! `[dependencies]` section, line for line. CI builds each of those packages alone (`cargo
//! check -p readme-…`, `.ci/run`), so a dependency or a feature the text forgets fails CI.
//! Also: no hidden `# ` lines (GitHub shows them raw), and the README stays short.

use std::path::{Path, PathBuf};

/// A fenced block: its info string, its text, and where it starts.
struct Block {
    info: String,
    text: String,
    line: usize,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (index, line) in markdown.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_owned(),
                    text: String::new(),
                    line: index + 1,
                });
            }
            (Some(_), Some("")) => out.extend(open.take()),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "an unclosed ``` block");
    out
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `[dependencies]` and the lines under it, up to the next section.
fn dependencies_section(manifest: &str) -> String {
    let start = manifest
        .find("[dependencies]\n")
        .expect("a [dependencies] section");
    let rest = &manifest[start..];
    let end = rest[1..].find("\n[").map_or(rest.len(), |i| i + 2);
    rest[..end].trim_end().to_owned() + "\n"
}

#[test]
fn every_rust_block_is_a_package_with_exactly_the_listed_dependencies() {
    let root = root();
    let mut pages = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);

    let mut packages: Vec<(PathBuf, String, String)> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("readme-")
        })
        .map(|dir| {
            let main = read(&dir.join("src/main.rs"));
            let deps = dependencies_section(&read(&dir.join("Cargo.toml")));
            (dir, main, deps)
        })
        .collect();
    packages.sort();
    let mut used = vec![false; packages.len()];
    let mut rust_blocks = 0;

    for page in &pages {
        let name = page.strip_prefix(&root).unwrap().display().to_string();
        let mut listed: Option<String> = None;
        for block in blocks(&read(page)) {
            let at = format!("{name}:{}", block.line);
            if block.info.starts_with("rust") {
                rust_blocks += 1;
                assert_eq!(block.info, "rust", "{at}: GitHub shows ```rust only");
                for line in block.text.lines() {
                    assert!(
                        !line.trim_start().starts_with("# ") && line.trim() != "#",
                        "{at}: a hidden line shows raw on GitHub: {line:?}"
                    );
                }
                let deps = listed.take().unwrap_or_else(|| {
                    panic!("{at}: no ```toml block with [dependencies] before this Rust block")
                });
                let Some(index) = packages.iter().position(|(_, main, _)| *main == block.text)
                else {
                    panic!(
                        "{at}: no examples/readme-*/src/main.rs is this block byte for byte; \
                         copy it there (or the package's file here)"
                    );
                };
                let (dir, _, package_deps) = &packages[index];
                assert_eq!(
                    &deps,
                    package_deps,
                    "{at}: the listed dependencies differ from {}/Cargo.toml's",
                    dir.display()
                );
                used[index] = true;
            } else if block.info == "toml" && block.text.starts_with("[dependencies]\n") {
                listed = Some(block.text.clone());
            }
        }
    }
    assert!(rust_blocks >= 2, "found {rust_blocks} Rust blocks");
    for ((dir, _, _), used) in packages.iter().zip(used) {
        assert!(used, "{} is no block of the README or docs/", dir.display());
    }
}

#[test]
fn the_readme_is_short() {
    let lines = read(&root().join("README.md")).lines().count();
    assert!(lines <= 200, "README.md has {lines} lines");
}

/// Every page the README and docs/ link to exists.
#[test]
fn links_resolve() {
    let root = root();
    let mut pages = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        pages.push(entry.unwrap().path());
    }
    let mut checked = 0;
    for page in pages {
        let text = read(&page);
        let dir = page.parent().unwrap();
        for (at, _) in text.match_indices("](") {
            let rest = &text[at + 2..];
            let target = &rest[..rest.find(')').unwrap()];
            if target.starts_with("http") {
                continue;
            }
            assert!(
                dir.join(target).exists(),
                "{} links to {target}",
                page.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "{checked} links");
}

/// The crate's front page and the README show the same status table.
#[test]
fn the_crate_docs_status_table_is_the_readmes() {
    let root = root();
    let readme = read(&root.join("README.md"));
    let table = |lines: Vec<&str>| -> Vec<String> {
        lines
            .into_iter()
            .skip_while(|l| !l.starts_with("| case | status |"))
            .take_while(|l| l.starts_with('|'))
            .map(str::to_owned)
            .collect()
    };
    let from_readme = table(readme.lines().collect());
    let lib = read(&root.join("iamport-tower/src/lib.rs"));
    let from_crate = table(lib.lines().filter_map(|l| l.strip_prefix("//! ")).collect());
    assert!(from_readme.len() > 10, "{from_readme:#?}");
    assert_eq!(from_crate, from_readme);
}
