//! Property tests of publish-body decoding: whatever bytes a publisher sends, decoding never
//! panics, and it accepts exactly the bodies the contract allows, with their strings unchanged.

use fanfare_model::{
    check_comment_text, check_user_id, CommentRequest, InvalidBody, LikeRequest,
    COMMENT_TEXT_MAX_CHARS,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Strings that hit every rule: plain, control characters, line breaks, SSE field syntax,
/// astral and combining characters, and lengths around the limits.
fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z]{0,8}",
        "[\\x00-\\x1f\\x7f\\u{80}-\\u{9f} a:\\r\\n]{0,12}",
        "(data: |event: |id: |\\n|\\r\\n|\\r|x){0,10}",
        "[\\u{1F300}-\\u{1F64F}\\u{300}-\\u{36F}\\u{202A}-\\u{202E}\\u{200B}-\\u{200F}]{0,8}",
        (0usize..4).prop_map(|extra| "é".repeat(COMMENT_TEXT_MAX_CHARS - 2 + extra)),
        (0usize..3).prop_map(|extra| "u".repeat(127 + extra)),
    ]
}

/// JSON values shaped like a publish body, and many that are almost one.
fn body_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        hostile_string().prop_map(Value::String),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..4)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    });
    prop_oneof![
        // Mostly objects with the real keys, so that the interesting checks are reached.
        3 => prop::collection::vec((key(), value.clone()), 0..4)
            .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        1 => value,
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("user_id".to_owned()),
        4 => Just("text".to_owned()),
        1 => Just("count".to_owned()),
        1 => any::<String>(),
    ]
}

/// The contract's `user_id`: optional (absent or null; with authentication on the token names
/// the user), else a string of 1 to 128 bytes without control characters. `Err` when the body
/// must be refused.
fn expected_user(object: &serde_json::Map<String, Value>) -> Result<Option<String>, ()> {
    match object.get("user_id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(user_id)) => {
            check_user_id(user_id).map_err(|_| ())?;
            Ok(Some(user_id.clone()))
        }
        Some(_) => Err(()),
    }
}

/// What the contract says about a body, written independently of the decoder.
fn expected_comment(value: &Value) -> Option<(Option<String>, String)> {
    let object = value.as_object()?;
    if object.keys().any(|key| key != "user_id" && key != "text") {
        return None;
    }
    let user_id = expected_user(object).ok()?;
    let text = object.get("text")?.as_str()?;
    let text_ok = (1..=COMMENT_TEXT_MAX_CHARS).contains(&text.chars().count())
        && !text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'));
    text_ok.then(|| (user_id, text.to_owned()))
}

fn expected_like(value: &Value) -> Option<Option<String>> {
    let object = value.as_object()?;
    if object.keys().any(|key| key != "user_id") {
        return None;
    }
    expected_user(object).ok()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_and_only_utf8_json_is_accepted(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            // Valid bodies with one byte changed: the near misses.
            (hostile_string(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(text, at, byte)| {
                let mut body = serde_json::json!({ "user_id": "u", "text": text }).to_string().into_bytes();
                let at = at.index(body.len());
                body[at] = byte;
                body
            }),
        ],
    ) {
        let comment = CommentRequest::decode(&body);
        let like = LikeRequest::decode(&body);
        if std::str::from_utf8(&body).is_err() {
            prop_assert_eq!(comment, Err(InvalidBody::NotUtf8));
            prop_assert_eq!(like, Err(InvalidBody::NotUtf8));
        } else {
            if let Ok(request) = comment {
                prop_assert!(request.user_id.iter().all(|user| check_user_id(user).is_ok()));
                prop_assert!(check_comment_text(&request.text).is_ok());
            }
            if let Ok(request) = like {
                prop_assert!(request.user_id.iter().all(|user| check_user_id(user).is_ok()));
            }
        }
    }

    #[test]
    fn json_bodies_are_accepted_exactly_as_the_contract_says(value in body_value()) {
        let body = serde_json::to_vec(&value).unwrap();
        let comment = CommentRequest::decode(&body)
            .ok()
            .map(|request| (request.user_id, request.text));
        prop_assert_eq!(comment, expected_comment(&value), "body {}", value);
        let like = LikeRequest::decode(&body).ok().map(|request| request.user_id);
        prop_assert_eq!(like, expected_like(&value), "body {}", value);
    }

    #[test]
    fn accepted_comment_text_is_kept_byte_for_byte(text in hostile_string(), ascii_escapes in any::<bool>()) {
        let value = serde_json::json!({ "user_id": "u", "text": text });
        let body = if ascii_escapes {
            // The same body with every non-ASCII character written as a \u escape.
            escape_non_ascii(&value.to_string())
        } else {
            value.to_string()
        };
        match CommentRequest::decode(body.as_bytes()) {
            Ok(request) => prop_assert_eq!(request.text, text),
            Err(error) => {
                prop_assert!(check_comment_text(&text).is_err(), "{} refused: {}", body, error);
            }
        }
    }
}

fn escape_non_ascii(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for ch in json.chars() {
        if ch.is_ascii() {
            out.push(ch);
        } else {
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}
