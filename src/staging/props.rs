//! Properties of the checksum parsers and the staging plan: no input makes them panic, and
//! a checksum file that does not carry a file's true sum never yields an expected sum equal
//! to it (acceptance compares the file's hash with exactly that expectation), whatever the
//! line format, the decoy lines for other files, or the comments around it.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::protocol::{
    expected_from_own, expected_from_sums, names_in_sums, parse_checksum_line, plan, role, Listing,
    CHECKSUM_SUFFIX, SUMS_FILE,
};

/// Cases for the wrong/right sum properties (about a second each in a debug build).
const CASES: u32 = 1500;
/// Cases for the never-panic property, whose text generation is slower.
const PANIC_CASES: u32 = 500;

fn sha_hex(bytes: &[u8]) -> String {
    crate::digest::sha256_hex(bytes)
}

/// Text made of the pieces checksum lines are made of, so the parsers' branches are hit.
fn checksum_like_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("SHA256 (".to_owned()),
        Just(") = ".to_owned()),
        Just(" ".to_owned()),
        Just("  ".to_owned()),
        Just("\t".to_owned()),
        Just("*".to_owned()),
        Just("\n".to_owned()),
        Just("\r\n".to_owned()),
        Just("#".to_owned()),
        Just("/".to_owned()),
        Just("etcd".to_owned()),
        Just("é✓".to_owned()),
        "[0-9a-fA-F]{60,66}",
        "[ -~]{0,12}",
    ];
    proptest::collection::vec(piece, 0..16).prop_map(|p| p.concat())
}

/// A line in one of the formats the parsers accept, for `name` with `hex`.
fn line(hex: String, name: String, format: u8) -> String {
    match format % 6 {
        0 => format!("{hex}  {name}"),
        1 => format!("{hex} *{name}"),
        2 => format!("SHA256 ({name}) = {hex}"),
        3 => format!("{hex}\t{name}\r"),
        4 => format!("  {}  ./dist/{name}", hex.to_ascii_uppercase()),
        _ => format!("{hex}  {name}   "),
    }
}

/// `good` with one hex digit changed: a sum that is wrong by the least possible.
fn off_by_one_digit(good: &str, at: usize, bump: u8) -> String {
    let mut bytes = good.as_bytes().to_vec();
    let i = at % bytes.len();
    let digits = b"0123456789abcdef";
    let pos = digits.iter().position(|d| *d == bytes[i]).unwrap_or(0);
    bytes[i] = digits[(pos + 1 + usize::from(bump % 15)) % 16];
    String::from_utf8(bytes).unwrap()
}

/// A staged drop whose checksum file carries only wrong sums for it (and the right sum for
/// other names, as decoys).
#[derive(Debug, Clone)]
struct WrongDrop {
    content: Vec<u8>,
    name: String,
    wrong: Vec<String>,
    formats: Vec<u8>,
    own_file: bool,
    decoys: Vec<(String, u8)>,
    comments: bool,
}

fn wrong_drop() -> impl Strategy<Value = WrongDrop> {
    (
        proptest::collection::vec(any::<u8>(), 1..64),
        "([-_][a-z0-9]{0,8})?",
        proptest::collection::vec((any::<usize>(), any::<u8>(), any::<bool>()), 1..3),
        proptest::collection::vec(any::<u8>(), 3),
        any::<bool>(),
        proptest::collection::vec(("[a-z]{1,6}", any::<u8>()), 0..3),
        any::<bool>(),
    )
        .prop_map(
            |(content, suffix, wrong, formats, own_file, decoys, comments)| {
                let good = sha_hex(&content);
                let wrong = wrong
                    .into_iter()
                    .map(|(at, bump, random)| {
                        if random {
                            sha_hex(&[content.as_slice(), b"x"].concat())
                        } else {
                            off_by_one_digit(&good, at, bump)
                        }
                    })
                    .collect();
                WrongDrop {
                    content,
                    name: format!("etcd{suffix}"),
                    wrong,
                    formats,
                    own_file,
                    decoys,
                    comments,
                }
            },
        )
}

impl WrongDrop {
    /// The staging dir as [`plan`] sees it.
    fn listing(&self) -> Listing {
        let good = sha_hex(&self.content);
        let mut lines = Vec::new();
        if self.comments {
            lines.push(format!("# {good}  {}", self.name));
            lines.push(String::new());
        }
        for (i, wrong) in self.wrong.iter().enumerate() {
            lines.push(line(
                wrong.clone(),
                self.name.clone(),
                self.formats[i % self.formats.len()],
            ));
        }
        for (decoy, format) in &self.decoys {
            // Another file's line carrying this file's true sum.
            lines.push(line(
                good.clone(),
                format!("{}-{decoy}", self.name),
                *format,
            ));
        }
        let text = lines.join("\n");
        let sums_name = if self.own_file {
            format!("{}{CHECKSUM_SUFFIX}", self.name)
        } else {
            SUMS_FILE.to_owned()
        };
        Listing {
            files: BTreeSet::from([self.name.clone(), sums_name.clone()]),
            checksum_texts: BTreeMap::from([(sums_name, text)]),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: PANIC_CASES, ..ProptestConfig::default() })]

    /// The parsers and the plan take any text and any names without panicking, and what
    /// they return is well formed: a sum is 64 lower-case hex digits.
    #[test]
    fn prop_staging_parsers_never_panic(
        text in prop_oneof![checksum_like_text(), any::<String>()],
        name in prop_oneof!["etcd[ -~]{0,8}".boxed(), any::<String>().boxed()],
        names in proptest::collection::vec("(etcd|etcdctl|etcdutl|SHA256SUMS|x)[a-z0-9.~-]{0,8}(\\.sha256)?", 0..6),
    ) {
        for l in text.split('\n') {
            if let Some(parsed) = parse_checksum_line(l) {
                prop_assert_eq!(parsed.sha256.len(), 64);
                prop_assert!(parsed.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            }
        }
        for sum in [expected_from_own(&text, &name), expected_from_sums(&text, &name)]
            .into_iter()
            .flat_map(|r| r.ok().flatten())
        {
            prop_assert_eq!(sum.len(), 64);
        }
        let _ = names_in_sums(&text);
        let _ = role(&name);
        let mut listing = Listing::default();
        for n in names.iter().chain([&name]) {
            listing.files.insert(n.clone());
            if n.ends_with(CHECKSUM_SUFFIX) || n == SUMS_FILE {
                listing.checksum_texts.insert(n.clone(), text.clone());
            }
        }
        let p = plan(&listing);
        for bundle in &p.ready {
            for f in bundle.files() {
                if let Ok(expected) = &f.checksum {
                    prop_assert_eq!(expected.sha256.len(), 64);
                }
            }
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    /// A checksum file with only wrong sums for a file (off by one digit, or another
    /// content's) never yields the file's true sum, even with that true sum on lines for
    /// other names or in a comment; acceptance then refuses the file.
    #[test]
    fn prop_staging_never_accepts_a_wrong_sum(drop in wrong_drop()) {
        let actual = sha_hex(&drop.content);
        let listing = drop.listing();
        let p = plan(&listing);
        for bundle in p.ready.iter().filter(|b| b.binary.name == drop.name) {
            if let Ok(expected) = &bundle.binary.checksum {
                prop_assert_ne!(&expected.sha256, &actual, "{:?}", listing);
            }
        }
    }

    /// The same file with its true sum, in any format, among the same decoys and comments,
    /// is ready with exactly that sum: the property above is not won by refusing everything.
    #[test]
    fn prop_staging_takes_the_right_sum(drop in wrong_drop()) {
        let actual = sha_hex(&drop.content);
        let right = WrongDrop { wrong: vec![actual.clone()], ..drop.clone() };
        let listing = right.listing();
        let p = plan(&listing);
        let bundle = p.ready.iter().find(|b| b.binary.name == drop.name);
        prop_assert!(bundle.is_some(), "not ready: {:?}\n{:?}", p, listing);
        let got = bundle.map(|b| b.binary.checksum.clone());
        prop_assert_eq!(got.and_then(|c| c.ok()).map(|e| e.sha256), Some(actual), "{:?}", listing);
    }
}
