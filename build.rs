//! Build script: embeds the GraphiQL page assets (served by `src/http/graphiql.rs`).
//!
//! The third-party bundles (GraphiQL, React, ReactDOM UMD builds) come from the npm packages
//! pinned in `web/package.json` / `web/package-lock.json`; they are never committed. The scripts
//! (scripts/test, scripts/run, scripts/bench, the Dockerfile) install them first with
//! `npm ci --prefix web --no-audit --no-fund --ignore-scripts`; this script never runs npm (a
//! build must not reach the network): it embeds what `web/node_modules` holds.
//!
//! The assets are copied into `OUT_DIR` under content-hashed names (so they can be served with
//! immutable cache headers) and `OUT_DIR/graphiql_assets.rs` lists them as `include_bytes!`
//! entries. If the assets cannot be obtained the build still succeeds with a `cargo:warning`,
//! and the generated file records why, so that the page answers 503 with instructions.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// (logical name, path relative to `web/`, content type)
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "react.production.min.js",
        "node_modules/react/umd/react.production.min.js",
        "text/javascript; charset=utf-8",
    ),
    (
        "react-dom.production.min.js",
        "node_modules/react-dom/umd/react-dom.production.min.js",
        "text/javascript; charset=utf-8",
    ),
    (
        "graphiql.min.js",
        "node_modules/graphiql/graphiql.min.js",
        "text/javascript; charset=utf-8",
    ),
    (
        "graphiql.min.css",
        "node_modules/graphiql/graphiql.min.css",
        "text/css; charset=utf-8",
    ),
    ("init.js", "src/init.js", "text/javascript; charset=utf-8"),
    ("page.css", "src/page.css", "text/css; charset=utf-8"),
];

const TEMPLATE: &str = "src/index.html";
/// Written by npm into node_modules on every successful install.
const HIDDEN_LOCKFILE: &str = "node_modules/.package-lock.json";
const GENERATED: &str = "graphiql_assets.rs";
const HOW_TO_BUILD: &str = "install Node.js and npm, run `npm ci --prefix web --no-audit --no-fund` \
     in the hivegraph source tree (it needs access to the npm registry), then rebuild the gateway \
     with cargo";

#[expect(
    clippy::disallowed_methods,
    reason = "a build script learns its directories from cargo's environment"
)]
fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let web = manifest_dir.join("web");

    println!("cargo:rerun-if-changed=build.rs");
    for file in ["package.json", "package-lock.json", "src"] {
        println!("cargo:rerun-if-changed=web/{file}");
    }

    let generated = match prepare(&web, &out_dir) {
        Ok(assets) => generate_available(&web, &out_dir, &assets),
        Err(reason) => Err(reason),
    };
    let code = match generated {
        Ok(code) => {
            // npm rewrites its hidden lock file on every install: watch it rather than the
            // whole node_modules tree (a missing path would make cargo rerun this every time).
            if web.join(HIDDEN_LOCKFILE).is_file() {
                println!("cargo:rerun-if-changed=web/{HIDDEN_LOCKFILE}");
            } else {
                println!("cargo:rerun-if-changed=web/node_modules");
            }
            code
        }
        Err(reason) => {
            // Rerun once something appears in web/ (e.g. a manual `npm ci --prefix web`).
            println!("cargo:rerun-if-changed=web");
            println!("cargo:warning=GraphiQL assets are not embedded: {reason}");
            println!(
                "cargo:warning=/graphql will answer 503 to browsers; to fix it: {HOW_TO_BUILD}"
            );
            generate_unavailable(&reason)
        }
    };
    write_if_changed(&out_dir.join(GENERATED), code.as_bytes()).expect("write generated file");
}

struct Asset {
    name: &'static str,
    file: String,
    content_type: &'static str,
    path: PathBuf,
}

/// Checks that `web/node_modules` is installed, then copies every asset into `OUT_DIR`.
fn prepare(web: &Path, out_dir: &Path) -> Result<Vec<Asset>, String> {
    if let Some((_, src, _)) = ASSETS.iter().find(|(_, src, _)| !web.join(src).is_file()) {
        return Err(format!(
            "web/{src} is missing (web/node_modules is not installed)"
        ));
    }
    if mtime(&web.join(HIDDEN_LOCKFILE)) < mtime(&web.join("package-lock.json")) {
        println!(
            "cargo:warning=web/node_modules is older than web/package-lock.json and may not \
             match it: run `npm ci --prefix web --no-audit --no-fund --ignore-scripts`"
        );
    }

    let assets_dir = out_dir.join("graphiql-assets");
    fs::create_dir_all(&assets_dir).map_err(|e| format!("create {}: {e}", assets_dir.display()))?;
    let mut assets: Vec<Asset> = Vec::new();
    for &(name, src, content_type) in ASSETS {
        let src = web.join(src);
        let bytes = fs::read(&src).map_err(|e| format!("read {}: {e}", src.display()))?;
        let bytes = strip_source_map_comment(bytes);
        let file = hashed_name(name, &bytes);
        let path = assets_dir.join(&file);
        write_if_changed(&path, &bytes).map_err(|e| format!("write {}: {e}", path.display()))?;
        assets.push(Asset {
            name,
            file,
            content_type,
            path,
        });
    }
    // Drop copies left over from earlier builds with other contents.
    if let Ok(entries) = fs::read_dir(&assets_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !assets
                .iter()
                .any(|a| name.to_str() == Some(a.file.as_str()))
            {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    Ok(assets)
}

fn generate_available(web: &Path, out_dir: &Path, assets: &[Asset]) -> Result<String, String> {
    let template_path = web.join(TEMPLATE);
    let mut template = fs::read_to_string(&template_path)
        .map_err(|e| format!("read {}: {e}", template_path.display()))?;
    template = strip_html_comments(&template);
    for asset in assets {
        let placeholder = format!("{{{{asset:{}}}}}", asset.name);
        let url = format!("/graphiql/assets/{}", asset.file);
        template = template.replace(&placeholder, &url);
    }
    if let Some(pos) = template.find("{{asset:") {
        let end = template[pos..]
            .find("}}")
            .map_or(template.len(), |e| pos + e + 2);
        return Err(format!(
            "{TEMPLATE} references an unknown asset {}",
            &template[pos..end]
        ));
    }
    let page = out_dir.join("graphiql-page.html");
    write_if_changed(&page, template.as_bytes())
        .map_err(|e| format!("write {}: {e}", page.display()))?;

    let mut code = String::from("// @generated by build.rs: GraphiQL assets embedded from web/.\n");
    code.push_str("pub(super) const UNAVAILABLE: Option<&str> = None;\n");
    let _ = writeln!(
        code,
        "pub(super) const PAGE_TEMPLATE: &str = include_str!({:?});",
        path_str(&page)?
    );
    code.push_str("/// (file name under /graphiql/assets/, logical name, content type, bytes)\n");
    code.push_str("pub(super) static ASSETS: &[(&str, &str, &str, &[u8])] = &[\n");
    for asset in assets {
        let _ = writeln!(
            code,
            "    ({:?}, {:?}, {:?}, include_bytes!({:?})),",
            asset.file,
            asset.name,
            asset.content_type,
            path_str(&asset.path)?
        );
    }
    code.push_str("];\n");
    Ok(code)
}

fn generate_unavailable(reason: &str) -> String {
    let message = format!(
        "The GraphiQL assets were not embedded when this gateway was built ({reason}). \
         To build them: {HOW_TO_BUILD}."
    );
    format!(
        "// @generated by build.rs: GraphiQL assets are NOT available.\n\
         pub(super) const UNAVAILABLE: Option<&str> = Some({message:?});\n\
         pub(super) const PAGE_TEMPLATE: &str = \"\";\n\
         /// (file name under /graphiql/assets/, logical name, content type, bytes)\n\
         pub(super) static ASSETS: &[(&str, &str, &str, &[u8])] = &[];\n"
    )
}

fn path_str(path: &Path) -> Result<&str, String> {
    path.to_str()
        .ok_or_else(|| format!("non UTF-8 path {}", path.display()))
}

fn mtime(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// `graphiql.min.js` -> `graphiql.0123456789abcdef.min.js`.
fn hashed_name(name: &str, bytes: &[u8]) -> String {
    let hash = format!("{:016x}", fnv1a(bytes));
    match name.split_once('.') {
        Some((stem, ext)) => format!("{stem}.{hash}.{ext}"),
        None => format!("{name}.{hash}"),
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Drops a trailing `//# sourceMappingURL=...` / `/*# sourceMappingURL=... */` line: the maps are
/// not served, and the browser would otherwise ask for them when developer tools are open.
fn strip_source_map_comment(mut bytes: Vec<u8>) -> Vec<u8> {
    let trimmed_len = bytes.trim_ascii_end().len();
    let start = bytes[..trimmed_len]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let last = &bytes[start..trimmed_len];
    if last.starts_with(b"//# sourceMappingURL=") || last.starts_with(b"/*# sourceMappingURL=") {
        bytes.truncate(start);
    }
    bytes
}

/// Removes `<!-- ... -->` comments (and the line breaks right after them) from the template.
fn strip_html_comments(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(start) = rest.find("<!--") {
        out.push_str(&rest[..start]);
        match rest[start..].find("-->") {
            Some(end) => rest = rest[start + end + 3..].trim_start_matches(['\r', '\n']),
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Writes only when the content differs, so unchanged assets keep their mtime.
fn write_if_changed(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}
