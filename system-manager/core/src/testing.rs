//! Policy fixtures shared by this crate's tests, the daemon's store
//! simulations and the fuzz targets, so the fleet a test runs is one line a
//! guest instead of a copied `[[guest]]` block.
//!
//! Not part of the daemon's API: hidden from the docs, and nothing outside
//! tests and fuzz targets uses it.

/// One guest of a test fleet: name, role (`android`, `cluster` or `other`)
/// and its own `shutdown_deadline_ms` where it has one.
pub type FleetGuest<'a> = (&'a str, &'a str, Option<u64>);

/// The `[[guest]]` tables of `fleet` as policy TOML, in order: `name`,
/// `role` and, where set, `shutdown_deadline_ms`, each on its own line (tests
/// may `replace` a line to vary one guest).
pub fn guest_tables(fleet: &[FleetGuest<'_>]) -> String {
    let mut text = String::new();
    for (name, role, deadline_ms) in fleet {
        text.push_str(&format!(
            "\n[[guest]]\nname = \"{name}\"\nrole = \"{role}\"\n"
        ));
        if let Some(ms) = deadline_ms {
            text.push_str(&format!("shutdown_deadline_ms = {ms}\n"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;

    #[test]
    fn guest_tables_parse_to_the_fleet() {
        let text = format!(
            "[system]\n{}",
            guest_tables(&[
                ("android", "android", None),
                ("cluster", "cluster", Some(20_000))
            ])
        );
        let policy = match Policy::from_toml_str(&text) {
            Ok(p) => p,
            Err(e) => panic!("{e}\n{text}"),
        };
        let names: Vec<&str> = policy.guests().iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["android", "cluster"]);
        assert!(
            text.contains("name = \"cluster\"\nrole = \"cluster\"\nshutdown_deadline_ms = 20000\n")
        );
    }
}
