//! Property tests of topology files, the one input of `fanfare topology check|render` and
//! `fanfare up`: arbitrary and mutated text never panics the check, whatever passes holds only
//! names that are safe as NATS subject tokens, and what passes round-trips through the writer.

use fanfare_model::names::is_valid_name;
use fanfare_topology::{Topology, TopologyError};
use proptest::prelude::*;

const LOCAL_3DC: &str = include_str!("../../../topology/local-3dc.toml");
const LOCAL_3DC_HA: &str = include_str!("../../../topology/local-3dc-ha.toml");

/// Checks `text` as `fanfare topology check` does, and every property of an accepted topology.
fn check(text: &str) -> Result<Topology, TopologyError> {
    let checked = Topology::from_toml_str(text, "fuzz.toml");
    if let Ok(topology) = &checked {
        for dc in &topology.datacenters {
            assert!(is_valid_name(&dc.name), "datacenter {:?} passed", dc.name);
        }
        for node in topology.nodes() {
            assert!(is_valid_name(node.name()), "node {:?} passed", node.name());
            assert!(is_valid_name(node.dc()), "node dc {:?} passed", node.dc());
        }
        let written = topology.to_toml_string();
        let back = Topology::from_toml_str(&written, "written.toml")
            .unwrap_or_else(|error| panic!("written text does not check: {error}\n{written}"));
        assert_eq!(back.settings, topology.settings);
        assert_eq!(back.datacenters, topology.datacenters);
    }
    checked
}

/// A TOML string literal holding `value`, whatever it contains.
fn toml_string(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

fn hostile_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9][a-z0-9-]{0,33}",
        "[a-z0-9.*> \\t%-]{1,12}",
        "[a-z]{1,4}(\\.|\\*|>|\\u{2024}|\\u{FF0E}|%2E|\\u{0}|\\n)[a-z]{0,4}",
        "\\PC{0,12}",
    ]
}

/// Text that looks like TOML often enough to reach validation.
fn tomlish() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,200}",
        "(\\[\\[?(datacenter|nats|frontend|dispatcher|settings)\\]\\]?\\n|[a-z_]{1,14} = (\"[a-z0-9.:\\[\\]-]{0,16}\"|[0-9]{1,6})\\n|#x\\n){0,24}",
    ]
}

// Checking a whole shipped file takes milliseconds in a debug build: the case counts keep this
// file within a few seconds.
proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics_the_check(text in tomlish()) {
        let _ = check(&text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    /// The shipped files with a span replaced by arbitrary text: near-valid files with one
    /// thing wrong, which is where a validator's gaps are.
    #[test]
    fn mutated_valid_files_never_panic_the_check(
        ha in any::<bool>(),
        start in any::<prop::sample::Index>(),
        len in 0usize..24,
        insert in prop_oneof!["\\PC{0,16}", "[\"=\\[\\]\\n.0-9a-z*>-]{0,16}"],
    ) {
        let base = if ha { LOCAL_3DC_HA } else { LOCAL_3DC };
        let mut start = start.index(base.len());
        while !base.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (start + len).min(base.len());
        while !base.is_char_boundary(end) {
            end += 1;
        }
        let mutated = format!("{}{}{}", &base[..start], insert, &base[end..]);
        let _ = check(&mutated);
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// A datacenter renamed (with every reference to it) passes iff the name is a safe token.
    #[test]
    fn a_datacenter_name_passes_iff_it_is_a_safe_token(name in hostile_name()) {
        prop_assume!(name != "dc1" && name != "dc3");
        let renamed = LOCAL_3DC
            .replace("\"dc2\"", &toml_string(&name));
        let passed = check(&renamed).is_ok();
        prop_assert_eq!(passed, is_valid_name(&name), "datacenter {:?}", name);
    }

    /// Likewise for a node name.
    #[test]
    fn a_node_name_passes_iff_it_is_a_safe_token(name in hostile_name()) {
        let renamed = LOCAL_3DC.replacen("name = \"dc2-fe1\"", &format!("name = {}", toml_string(&name)), 1);
        let clashes = name != "dc2-fe1" && LOCAL_3DC.contains(&format!("name = \"{name}\"\n"));
        let passed = check(&renamed).is_ok();
        prop_assert_eq!(passed, is_valid_name(&name) && !clashes, "node {:?}", name);
    }
}

#[test]
fn the_shipped_topologies_check_and_round_trip() {
    check(LOCAL_3DC).expect("local-3dc.toml checks");
    check(LOCAL_3DC_HA).expect("local-3dc-ha.toml checks");
}
