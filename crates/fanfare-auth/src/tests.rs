//! The verifier against real keys: the test-only fixtures in `tests/fixtures/auth`.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use proptest::prelude::*;

use crate::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/auth")
        .join(name)
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

const HOUR: Duration = Duration::from_secs(3600);

/// Three keys, one per algorithm, each with its own kid.
fn settings() -> AuthSettings {
    AuthSettings {
        keys: vec![
            KeySettings::hs256_file("hs", fixture("hs256-one.secret")),
            KeySettings::public_key_file("rs", KeyAlgorithm::RS256, fixture("rsa-public.pem")),
            KeySettings::public_key_file("ed", KeyAlgorithm::EdDSA, fixture("ed25519-public.pem")),
        ],
        private_videos: vec!["vip-*".into(), "secret".into()],
        ..AuthSettings::default()
    }
}

fn verifier() -> Verifier {
    Verifier::from_settings(&settings()).unwrap().unwrap()
}

fn hs() -> SigningKey {
    SigningKey::hs256_file(Some("hs"), &fixture("hs256-one.secret")).unwrap()
}

fn rs() -> SigningKey {
    SigningKey::from_pem(Some("rs"), KeyAlgorithm::RS256, &pem("rsa-private.pem")).unwrap()
}

fn ed() -> SigningKey {
    SigningKey::from_pem(Some("ed"), KeyAlgorithm::EdDSA, &pem("ed25519-private.pem")).unwrap()
}

fn alice() -> Claims {
    Claims::new("alice", "fanfare", HOUR)
}

fn token(key: &SigningKey, claims: &Claims) -> String {
    mint(key, claims).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn tokens_of_every_algorithm_verify_and_name_their_subject() {
    let verifier = verifier();
    for key in [hs(), rs(), ed()] {
        let grant = verifier.verify(&token(&key, &alice())).unwrap();
        assert_eq!(grant.subject, "alice");
        assert_eq!(grant.allows("any", Action::Comment), Ok(()));
    }
}

#[test]
fn off_builds_no_verifier_and_on_without_keys_is_refused() {
    assert!(Verifier::from_settings(&AuthSettings::off())
        .unwrap()
        .is_none());
    let error = Verifier::from_settings(&AuthSettings::default())
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("auth.keys"), "{error}");
}

#[test]
fn each_bad_token_is_refused_for_its_own_reason() {
    let verifier = verifier();
    let now = unix_now();
    let other_ed = SigningKey::from_pem(
        Some("ed"),
        KeyAlgorithm::EdDSA,
        &pem("ed25519-other-private.pem"),
    )
    .unwrap();
    let other_secret = SigningKey::hs256_file(Some("hs"), &fixture("hs256-two.secret")).unwrap();
    let cases: Vec<(String, AuthError)> = vec![
        (
            token(
                &hs(),
                &Claims {
                    exp: now - 120,
                    ..alice()
                },
            ),
            AuthError::Expired,
        ),
        (
            token(
                &hs(),
                &Claims {
                    nbf: Some(now + 600),
                    ..alice()
                },
            ),
            AuthError::NotYetValid,
        ),
        (token(&other_ed, &alice()), AuthError::BadSignature),
        (token(&other_secret, &alice()), AuthError::BadSignature),
        (
            token(&hs().with_kid(Some("nope")), &alice()),
            AuthError::UnknownKey,
        ),
        (
            token(&hs().with_kid(None), &alice()),
            AuthError::KeyIdRequired,
        ),
        (
            token(&hs(), &Claims::new("alice", "elsewhere", HOUR)),
            AuthError::WrongAudience,
        ),
        // The HS256 secret under the RS256 key's kid: the classic algorithm confusion.
        (
            token(&hs().with_kid(Some("rs")), &alice()),
            AuthError::AlgorithmRejected,
        ),
        (
            "not-a-token".to_owned(),
            AuthError::Malformed("not three base64url parts separated by dots"),
        ),
        (String::new(), AuthError::Missing),
    ];
    for (token, expected) in cases {
        assert_eq!(
            verifier.verify(&token).err(),
            Some(expected.clone()),
            "{token}"
        );
        assert!(!expected.is_forbidden());
        assert_eq!(expected.slug().split('-').next(), Some("token"));
    }
}

#[test]
fn alg_none_is_refused_even_with_a_valid_looking_body() {
    let verifier = verifier();
    let claims = serde_json::to_vec(&alice()).unwrap();
    for alg in ["none", "None", "HS512", "PS256"] {
        let header = format!(r#"{{"alg":"{alg}","typ":"JWT","kid":"hs"}}"#);
        let unsigned = format!("{}.{}.", b64(header.as_bytes()), b64(&claims));
        let error = verifier.verify(&unsigned).unwrap_err();
        assert_eq!(error, AuthError::AlgorithmRejected, "{alg}");
    }
}

#[test]
fn a_configured_issuer_is_required_and_matched() {
    let verifier = Verifier::from_settings(&AuthSettings {
        issuer: Some("https://id.example".into()),
        ..settings()
    })
    .unwrap()
    .unwrap();
    assert_eq!(
        verifier.verify(&token(&hs(), &alice())),
        Err(AuthError::MissingClaim("iss"))
    );
    let wrong = Claims {
        iss: Some("https://evil.example".into()),
        ..alice()
    };
    assert_eq!(
        verifier.verify(&token(&hs(), &wrong)),
        Err(AuthError::WrongIssuer)
    );
    let right = Claims {
        iss: Some("https://id.example".into()),
        ..alice()
    };
    assert!(verifier.verify(&token(&hs(), &right)).is_ok());
}

#[test]
fn the_leeway_forgives_a_little_clock_skew_and_no_more() {
    let verifier = verifier();
    let now = unix_now();
    let just_expired = Claims {
        exp: now - 5,
        ..alice()
    };
    assert!(verifier.verify(&token(&hs(), &just_expired)).is_ok());
    let almost_valid = Claims {
        nbf: Some(now + 5),
        ..alice()
    };
    assert!(verifier.verify(&token(&hs(), &almost_valid)).is_ok());
}

#[test]
fn scope_claims_restrict_videos_and_actions() {
    let verifier = verifier();
    let scoped = alice()
        .videos(&["talk-1", "vip-*"])
        .actions(&[Action::Like, Action::View]);
    let scoped = token(&ed(), &scoped);
    assert!(verifier
        .authorize(Some(&scoped), "talk-1", Action::Like)
        .is_ok());
    assert!(verifier
        .authorize(Some(&scoped), "vip-7", Action::View)
        .is_ok());
    assert_eq!(
        verifier.authorize(Some(&scoped), "talk-2", Action::Like),
        Err(AuthError::VideoOutOfScope)
    );
    let refused = verifier.authorize(Some(&scoped), "talk-1", Action::Comment);
    assert_eq!(refused, Err(AuthError::ActionOutOfScope(Action::Comment)));
    assert!(refused.unwrap_err().is_forbidden());
    assert_eq!(
        verifier.authorize(None, "talk-1", Action::Like),
        Err(AuthError::Missing)
    );
}

#[test]
fn bad_subjects_and_patterns_make_a_token_malformed() {
    let verifier = verifier();
    for claims in [
        Claims::new("", "fanfare", HOUR),
        Claims::new("a\nb", "fanfare", HOUR),
        Claims::new("x".repeat(MAX_SUBJECT_BYTES + 1), "fanfare", HOUR),
        alice().videos(&["a*b"]),
    ] {
        let error = verifier.verify(&token(&hs(), &claims)).unwrap_err();
        assert_eq!(error.slug(), "token-malformed", "{claims:?}");
    }
}

#[test]
fn private_videos_match_their_patterns() {
    let verifier = verifier();
    assert!(verifier.is_private("vip-1"));
    assert!(verifier.is_private("secret"));
    assert!(!verifier.is_private("secret-2"));
    assert!(!verifier.is_private("talk"));
}

#[test]
fn challenges_follow_rfc_6750() {
    assert_eq!(AuthError::Missing.challenge(), "Bearer realm=\"fanfare\"");
    assert!(AuthError::Expired
        .challenge()
        .contains("error=\"invalid_token\""));
    assert!(AuthError::VideoOutOfScope
        .challenge()
        .contains("error=\"insufficient_scope\""));
}

#[test]
fn unreadable_or_wrong_key_files_are_named() {
    let missing = AuthSettings {
        keys: vec![KeySettings::hs256_file("a", "/nonexistent/secret")],
        ..AuthSettings::default()
    };
    let error = Verifier::from_settings(&missing).err().unwrap().to_string();
    assert!(
        error.contains("auth.keys[0]") && error.contains("/nonexistent/secret"),
        "{error}"
    );
    let rsa_as_ed = AuthSettings {
        keys: vec![KeySettings::public_key_file(
            "a",
            KeyAlgorithm::EdDSA,
            fixture("rsa-public.pem"),
        )],
        ..AuthSettings::default()
    };
    let error = Verifier::from_settings(&rsa_as_ed)
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("auth.keys[0]"), "{error}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever a client sends as a token, the verifier answers with a refusal, never a panic.
    #[test]
    fn arbitrary_strings_are_refused_without_panic(token in any::<String>()) {
        prop_assert!(verifier().verify(&token).is_err());
    }

    /// Arbitrary bytes (shown as text the way a header value would be) are refused too.
    #[test]
    fn arbitrary_bytes_are_refused_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let token = String::from_utf8_lossy(&bytes);
        prop_assert!(verifier().verify(&token).is_err());
    }

    /// Three dot-separated base64url parts of arbitrary content: refused.
    #[test]
    fn arbitrary_jwt_shaped_tokens_are_refused(
        header in proptest::collection::vec(any::<u8>(), 0..80),
        claims in proptest::collection::vec(any::<u8>(), 0..200),
        signature in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let token = format!("{}.{}.{}", b64(&header), b64(&claims), b64(&signature));
        prop_assert!(verifier().verify(&token).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A valid token with any one character of its signature changed is refused, for every
    /// algorithm.
    #[test]
    fn a_token_with_one_signature_byte_changed_is_refused(
        which in 0usize..3,
        position in any::<prop::sample::Index>(),
        replacement in any::<u8>(),
    ) {
        let verifier = verifier();
        let key = [hs(), rs(), ed()].into_iter().nth(which).unwrap();
        let valid = token(&key, &alice());
        prop_assert!(verifier.verify(&valid).is_ok());
        let signature_start = valid.rfind('.').unwrap() + 1;
        let mut bytes = valid.clone().into_bytes();
        let at = signature_start + position.index(bytes.len() - signature_start);
        let flipped = if bytes[at] == replacement { replacement ^ 0x01 } else { replacement };
        bytes[at] = flipped;
        let tampered = String::from_utf8_lossy(&bytes).into_owned();
        prop_assert_ne!(&tampered, &valid);
        prop_assert!(verifier.verify(&tampered).is_err(), "accepted {}", tampered);
    }
}
