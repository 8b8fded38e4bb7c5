//! The Debian mirror(s) of this machine's own apt configuration, for the
//! private apt setup ([`crate::apt`]).
//!
//! Read from `/etc/apt/sources.list`, `/etc/apt/sources.list.d/*.list`
//! (one-line format) and `/etc/apt/sources.list.d/*.sources` (deb822). A
//! source counts as a Debian mirror when it is a `deb` source with the
//! `main` component and a Debian suite (`bookworm`, `stable`,
//! `bookworm-updates`, ...; not `*-security`, whose archive has no
//! backports). `$VMSTACK_DEBIAN_MIRROR` (URIs separated by spaces) replaces
//! them, e.g. for a machine whose apt sources name no Debian mirror.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// Environment variable that overrides the mirrors found in the apt sources.
pub const MIRROR_ENV: &str = "VMSTACK_DEBIAN_MIRROR";

/// Debian codenames and aliases a mirror's suite may be named by.
const DEBIAN_SUITES: &[&str] = &[
    "buster",
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "sid",
    "oldoldstable",
    "oldstable",
    "stable",
    "testing",
    "unstable",
];

/// One `deb` source of the apt configuration (one URI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The archive's URI.
    pub uri: String,
    /// Its suites (`bookworm`, `bookworm-updates`).
    pub suites: Vec<String>,
    /// Its components (`main`, `contrib`).
    pub components: Vec<String>,
    /// `signed-by` keyring file, if given as a path.
    pub signed_by: Option<String>,
    /// `trusted=yes`.
    pub trusted: bool,
}

/// A Debian mirror for the private `sources.list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// The archive's URI, without a trailing `/`.
    pub uri: String,
    /// `signed-by` keyring file of the source it came from.
    pub signed_by: Option<String>,
    /// `trusted=yes` on the source it came from.
    pub trusted: bool,
}

impl Mirror {
    /// The `sources.list` line for `suite` (component `main`).
    pub fn line(&self, suite: &str) -> String {
        let mut options = Vec::new();
        if let Some(key) = &self.signed_by {
            options.push(format!("signed-by={key}"));
        }
        if self.trusted {
            options.push("trusted=yes".to_string());
        }
        let options = if options.is_empty() {
            String::new()
        } else {
            format!("[{}] ", options.join(" "))
        };
        format!("deb {options}{} {suite} main", self.uri)
    }
}

/// The `deb` sources of a one-line-format file (`sources.list`, `*.list`).
pub fn parse_one_line(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line
            .strip_prefix("deb ")
            .or_else(|| line.strip_prefix("deb\t"))
        else {
            continue;
        };
        let rest = rest.trim_start();
        let (options, rest) = match rest.strip_prefix('[') {
            Some(r) => match r.split_once(']') {
                Some((o, r)) => (o, r),
                None => continue,
            },
            None => ("", rest),
        };
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        let mut source = Source {
            uri: uri.to_string(),
            suites: vec![suite.to_string()],
            components: words.map(str::to_string).collect(),
            signed_by: None,
            trusted: false,
        };
        for option in options.split_whitespace() {
            match option.split_once('=') {
                Some(("signed-by", v)) if v.starts_with('/') => {
                    source.signed_by = Some(v.to_string())
                }
                Some(("trusted", v)) => source.trusted = v == "yes",
                _ => {}
            }
        }
        out.push(source);
    }
    out
}

/// The `deb` sources of a deb822 file (`*.sources`): one per URI of each
/// enabled stanza whose `Types` include `deb`.
pub fn parse_deb822(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    let mut fields: Vec<(String, String)> = Vec::new();
    let flush = |fields: &mut Vec<(String, String)>, out: &mut Vec<Source>| {
        let get = |k: &str| {
            fields
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.as_str())
        };
        let words = |k: &str| -> Vec<String> {
            get(k)
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        let is_deb = words("Types").iter().any(|t| t == "deb");
        let enabled = get("Enabled").is_none_or(|v| !v.trim().eq_ignore_ascii_case("no"));
        if is_deb && enabled {
            let signed_by = get("Signed-By")
                .map(str::trim)
                .filter(|v| v.starts_with('/') && !v.contains('\n'))
                .map(str::to_string);
            let trusted = get("Trusted").is_some_and(|v| v.trim().eq_ignore_ascii_case("yes"));
            for uri in words("URIs") {
                out.push(Source {
                    uri,
                    suites: words("Suites"),
                    components: words("Components"),
                    signed_by: signed_by.clone(),
                    trusted,
                });
            }
        }
        fields.clear();
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut fields, &mut out);
        } else if line.starts_with('#') {
            continue;
        } else if line.starts_with([' ', '\t']) {
            // A continuation line (an inline key, a long list).
            if let Some((_, v)) = fields.last_mut() {
                v.push('\n');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            fields.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    flush(&mut fields, &mut out);
    out
}

/// Whether `suite` names a Debian release suite other than security.
fn is_debian_suite(suite: &str) -> bool {
    let base = suite.split_once('-').map_or(suite, |(b, _)| b);
    DEBIAN_SUITES.contains(&base) && !suite.ends_with("-security")
}

/// The Debian mirrors among `sources`, each URI once, in order.
pub fn debian_mirrors(sources: &[Source]) -> Vec<Mirror> {
    let mut out: Vec<Mirror> = Vec::new();
    for s in sources {
        let debian =
            s.suites.iter().any(|x| is_debian_suite(x)) && s.components.iter().any(|c| c == "main");
        let uri = s.uri.trim_end_matches('/');
        if debian && !out.iter().any(|m| m.uri == uri) {
            out.push(Mirror {
                uri: uri.to_string(),
                signed_by: s.signed_by.clone(),
                trusted: s.trusted,
            });
        }
    }
    out
}

/// Every `deb` source of the apt configuration under `etc_apt`
/// (`/etc/apt`): `sources.list`, then `sources.list.d/*.list` and
/// `*.sources` in name order (other files there, e.g. `*.disabled`, are
/// not read, as apt does not read them).
pub fn read_sources(etc_apt: &Path) -> Result<Vec<Source>> {
    let mut out = Vec::new();
    let main = etc_apt.join("sources.list");
    if main.is_file() {
        let text = std::fs::read_to_string(&main)
            .with_context(|| format!("cannot read {}", main.display()))?;
        out.extend(parse_one_line(&text));
    }
    let dir = etc_apt.join("sources.list.d");
    let mut files: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    for path in files {
        let parse: fn(&str) -> Vec<Source> = match path.extension().and_then(|e| e.to_str()) {
            Some("list") => parse_one_line,
            Some("sources") => parse_deb822,
            _ => continue,
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        out.extend(parse(&text));
    }
    Ok(out)
}

/// The mirrors for the private apt setup: `override_uris` (the value of
/// [`MIRROR_ENV`]) if set, else the Debian mirrors of the apt configuration
/// under `etc_apt`; an error saying what to do if there are none.
pub fn mirrors(override_uris: Option<&str>, etc_apt: &Path) -> Result<Vec<Mirror>> {
    if let Some(uris) = override_uris.filter(|v| !v.trim().is_empty()) {
        return Ok(uris
            .split_whitespace()
            .map(|u| Mirror {
                uri: u.trim_end_matches('/').to_string(),
                signed_by: None,
                trusted: false,
            })
            .collect());
    }
    let found = debian_mirrors(&read_sources(etc_apt)?);
    if found.is_empty() {
        bail!(
            "no Debian mirror (a `deb` source with a Debian suite and `main`) in {}/sources.list \
             or {}/sources.list.d: set {MIRROR_ENV}=<URI of a Debian mirror>",
            etc_apt.display(),
            etc_apt.display()
        );
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mirrors' URIs.
    fn uris(mirrors: &[Mirror]) -> Vec<&str> {
        mirrors.iter().map(|m| m.uri.as_str()).collect()
    }

    const ONE_LINE: &str = "\
# main archive
deb http://mirror.example/debian/ bookworm main contrib
deb-src http://mirror.example/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/local.gpg] http://local.example/debian bookworm-updates main # local
deb http://security.example/debian-security bookworm-security main
deb https://vendor.example/apt cloud-sdk-bookworm main
deb [trusted=yes] http://unsigned.example/debian stable main
deb http://contrib-only.example/debian bookworm contrib
deb [broken http://x.example/debian bookworm main
";

    #[test]
    fn one_line_sources() {
        let s = parse_one_line(ONE_LINE);
        assert_eq!(s.len(), 6, "{s:?}");
        assert_eq!(s[0].uri, "http://mirror.example/debian/");
        assert_eq!(s[0].suites, vec!["bookworm"]);
        assert_eq!(s[0].components, vec!["main", "contrib"]);
        assert_eq!(
            s[1].signed_by.as_deref(),
            Some("/usr/share/keyrings/local.gpg")
        );
        assert_eq!(s[1].components, vec!["main"]);
        assert!(s[4].trusted);
        let m = debian_mirrors(&s);
        assert_eq!(
            uris(&m),
            [
                "http://mirror.example/debian",
                "http://local.example/debian",
                "http://unsigned.example/debian"
            ]
        );
        assert_eq!(
            m[1].line("bookworm-backports"),
            "deb [signed-by=/usr/share/keyrings/local.gpg] http://local.example/debian bookworm-backports main"
        );
        assert_eq!(
            m[2].line("bookworm"),
            "deb [trusted=yes] http://unsigned.example/debian bookworm main"
        );
        assert_eq!(
            m[0].line("bookworm"),
            "deb http://mirror.example/debian bookworm main"
        );
    }

    /// As Debian 12's installer writes it (with snapshot comments), plus a
    /// disabled stanza, an inline key and a vendor repository.
    const DEB822: &str = "\
Types: deb
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb deb-src
URIs: http://second.example/debian http://third.example/debian/
Suites: stable
Components: main non-free-firmware
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 xyz
 -----END PGP PUBLIC KEY BLOCK-----

Enabled: no
Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Components: main

types: deb
uris: https://vendor.example/node
suites: nodistro
components: main
";

    #[test]
    fn deb822_sources() {
        let s = parse_deb822(DEB822);
        assert_eq!(s.len(), 5, "{s:?}");
        assert_eq!(s[0].suites, vec!["bookworm", "bookworm-updates"]);
        assert_eq!(
            s[0].signed_by.as_deref(),
            Some("/usr/share/keyrings/debian-archive-keyring.gpg")
        );
        // An inline key is not a file to pass on.
        assert_eq!(s[2].signed_by, None);
        assert_eq!(s[3].uri, "http://third.example/debian/");
        assert_eq!(s[4].uri, "https://vendor.example/node");
        let m = debian_mirrors(&s);
        assert_eq!(
            uris(&m),
            [
                "http://mirror.example/debian",
                "http://second.example/debian",
                "http://third.example/debian"
            ]
        );
        assert_eq!(
            m[0].signed_by.as_deref(),
            Some("/usr/share/keyrings/debian-archive-keyring.gpg")
        );
    }

    #[test]
    fn files_are_read_like_apt_and_the_override_wins() {
        let dir = std::env::temp_dir().join(format!("vmstack-apt-src-{}", std::process::id()));
        let d = dir.join("sources.list.d");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(dir.join("sources.list"), "# nothing\n").unwrap();
        std::fs::write(d.join("debian.sources"), DEB822).unwrap();
        std::fs::write(
            d.join("old.list.disabled"),
            "deb http://ignored.example/debian bookworm main\n",
        )
        .unwrap();
        std::fs::write(
            d.join("zz.list"),
            "deb http://last.example/debian bookworm main\n",
        )
        .unwrap();
        let m = mirrors(None, &dir).unwrap();
        let uris: Vec<&str> = m.iter().map(|m| m.uri.as_str()).collect();
        assert_eq!(uris.first(), Some(&"http://mirror.example/debian"));
        assert_eq!(uris.last(), Some(&"http://last.example/debian"));
        assert!(!uris.iter().any(|u| u.contains("ignored")));
        let o = mirrors(
            Some(" http://local.example/debian/  http://b.example/d "),
            &dir,
        )
        .unwrap();
        assert_eq!(o.len(), 2);
        assert_eq!(
            o[0].line("bookworm"),
            "deb http://local.example/debian bookworm main"
        );
        std::fs::remove_file(d.join("debian.sources")).unwrap();
        std::fs::remove_file(d.join("zz.list")).unwrap();
        let err = mirrors(None, &dir).unwrap_err().to_string();
        assert!(err.contains(MIRROR_ENV), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
