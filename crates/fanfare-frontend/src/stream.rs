//! What a viewer stream request asks for, checked once for both paths that serve it: the raw
//! listener (every viewer request that looks like one) and the router (anything unusual that
//! reaches hyper). Both hand [`check`] the same [`StreamParts`] and get the same answer.

use fanfare_model::{ConnectionPosition, Position, VideoId};

use crate::auth::Gate;
use crate::problem::ApiError;

/// Which route a stream request came by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamRoute<'a> {
    /// `GET /v1/videos/{video_id}/events`, the id percent-decoded.
    Video(&'a str),
    /// `GET /v1/events?videos=a,b,c`.
    Videos,
}

/// The parts of a stream request that matter, however it was parsed. Holds a token (header,
/// query or cookie) for a private video: not `Debug`, never logged.
pub(crate) struct StreamParts<'a> {
    pub route: StreamRoute<'a>,
    /// The raw query string (after `?`), if any.
    pub query: Option<&'a str>,
    pub accept: Option<&'a [u8]>,
    pub last_event_id: Option<&'a [u8]>,
    pub authorization: Option<&'a [u8]>,
    pub cookie: Option<&'a [u8]>,
}

/// A checked stream request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamOpen {
    /// One video, from now or after a position.
    Video {
        video: VideoId,
        resume: Option<Position>,
    },
    /// Several videos, each from now or after its own position.
    Videos {
        videos: Vec<(VideoId, Option<Position>)>,
        /// The subject of the token that opened a private video, if any: later subscription
        /// changes must come with the same user's token.
        owner: Option<String>,
    },
}

/// The query parameters a stream reads.
#[derive(Default)]
struct StreamQuery {
    last_event_id: Option<String>,
    access_token: Option<String>,
    videos: Vec<String>,
}

fn parse_query(query: Option<&str>) -> StreamQuery {
    let mut parsed = StreamQuery::default();
    let Some(query) = query else {
        return parsed;
    };
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "last_event_id" if parsed.last_event_id.is_none() => {
                parsed.last_event_id = Some(value.into_owned())
            }
            crate::auth::TOKEN_QUERY_PARAM if parsed.access_token.is_none() => {
                parsed.access_token = Some(value.into_owned())
            }
            "videos" => parsed.videos.extend(
                value
                    .split(',')
                    .filter(|video| !video.is_empty())
                    .map(str::to_owned),
            ),
            _ => {}
        }
    }
    parsed
}

/// Where a viewer resumes: the `Last-Event-ID` header (what a browser's EventSource sends on
/// reconnect) wins over the `last_event_id` query parameter (what a page can set on a fresh
/// EventSource). An empty id is no id, as in SSE itself (an `id:` line without a value resets
/// the last event id, and browsers then send no header): an empty header gives way to the
/// query, and with neither the stream starts from now instead of replaying everything
/// retained. Not UTF-8 is refused like any malformed position.
fn resume_text<'a>(header: Option<&'a [u8]>, query: Option<&'a str>) -> Option<&'a str> {
    let raw = match header.filter(|raw| !raw.is_empty()) {
        Some(raw) => std::str::from_utf8(raw).unwrap_or("\u{0}"),
        None => query.unwrap_or(""),
    };
    (!raw.is_empty()).then_some(raw)
}

/// A position a stream resumes from: one video's, or a multi-video stream's.
enum Resume {
    Video(Position),
    Connection(ConnectionPosition),
}

fn parse_resume(raw: Option<&str>) -> Result<Option<Resume>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    if ConnectionPosition::is_tagged(raw) {
        return Ok(Some(Resume::Connection(raw.parse()?)));
    }
    Ok(Some(Resume::Video(raw.parse()?)))
}

/// Whether an `Accept` header value admits `text/event-stream`.
pub(crate) fn accepts_media(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let media = range.split(';').next().unwrap_or("").trim();
        matches!(media, "text/event-stream" | "text/*" | "*/*")
    })
}

fn no_video_in(reason: &'static str) -> ApiError {
    ApiError::InvalidLastEventId(fanfare_model::InvalidPosition::unusable(reason))
}

/// Checks a stream request: ids, the media type, the position, the limit on videos, and a
/// token for every private video (checked on every open, a resume included).
pub(crate) fn check(
    parts: &StreamParts<'_>,
    auth: &Gate,
    max_videos: usize,
) -> Result<StreamOpen, ApiError> {
    let query = parse_query(parts.query);
    // The route's own id first: a bad id is the first thing a client gets wrong.
    let route_video = match parts.route {
        StreamRoute::Video(raw) => Some(VideoId::parse(raw)?),
        StreamRoute::Videos => None,
    };
    if let Some(accept) = parts.accept {
        let accept = std::str::from_utf8(accept).map_err(|_| ApiError::NotAcceptable)?;
        if !accepts_media(accept) {
            return Err(ApiError::NotAcceptable);
        }
    }
    let resume = parse_resume(resume_text(
        parts.last_event_id,
        query.last_event_id.as_deref(),
    ))?;
    let authorize = |video: &VideoId| {
        auth.viewer(
            video,
            parts.authorization,
            query.access_token.as_deref(),
            parts.cookie,
        )
    };
    if let Some(video) = route_video {
        let resume = match resume {
            None => None,
            Some(Resume::Video(position)) => Some(position),
            // A multi-video position names this video's position among others.
            Some(Resume::Connection(connection)) => Some(
                connection
                    .into_videos()
                    .into_iter()
                    .find(|(known, _)| *known == video)
                    .map(|(_, position)| position)
                    .ok_or_else(|| no_video_in("the position does not name this video"))?,
            ),
        };
        authorize(&video)?;
        return Ok(StreamOpen::Video { video, resume });
    }
    let videos: Vec<(VideoId, Option<Position>)> = match resume {
        // A reconnect follows what its id names, whatever the URL says: the id is written
        // again after every subscription change, the URL never.
        Some(Resume::Connection(connection)) => connection
            .into_videos()
            .into_iter()
            .map(|(video, position)| (video, Some(position)))
            .collect(),
        resume => {
            let mut videos: Vec<VideoId> = Vec::with_capacity(query.videos.len());
            for raw in &query.videos {
                let video = VideoId::parse(raw)?;
                if !videos.contains(&video) {
                    videos.push(video);
                }
                if videos.len() > max_videos {
                    return Err(ApiError::TooManyVideos { limit: max_videos });
                }
            }
            match resume {
                None => videos.into_iter().map(|video| (video, None)).collect(),
                // One video's position fits a stream of that one video only.
                Some(Resume::Video(position)) if videos.len() == 1 => {
                    vec![(videos.remove(0), Some(position))]
                }
                Some(_) => {
                    return Err(no_video_in(
                        "a single-video position needs exactly one video in videos=",
                    ))
                }
            }
        }
    };
    if videos.len() > max_videos {
        return Err(ApiError::TooManyVideos { limit: max_videos });
    }
    let mut owner = None;
    for (video, _) in &videos {
        if let Some(subject) = authorize(video)? {
            owner.get_or_insert(subject);
        }
    }
    Ok(StreamOpen::Videos { videos, owner })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanfare_telemetry::FrontendMetrics;

    fn gate() -> Gate {
        let mut registry = prometheus_client::registry::Registry::default();
        Gate::new(None, FrontendMetrics::register(&mut registry))
    }

    fn parts<'a>(route: StreamRoute<'a>, query: Option<&'a str>) -> StreamParts<'a> {
        StreamParts {
            route,
            query,
            accept: None,
            last_event_id: None,
            authorization: None,
            cookie: None,
        }
    }

    #[test]
    fn an_empty_last_event_id_starts_from_now_and_a_malformed_one_is_refused() {
        assert_eq!(resume_text(None, None), None);
        assert_eq!(resume_text(Some(b""), None), None);
        assert_eq!(resume_text(None, Some("")), None);
        assert_eq!(resume_text(Some(b"dc1:4"), Some("dc1:3")), Some("dc1:4"));
        assert_eq!(resume_text(Some(b""), Some("dc1:3")), Some("dc1:3"));
        for bad in [&b"dc1"[..], b"dc1:x", b"\xff", b" dc1:1", b"m1;dc1;a"] {
            let request = StreamParts {
                last_event_id: Some(bad),
                ..parts(StreamRoute::Video("v"), None)
            };
            assert!(
                matches!(
                    check(&request, &gate(), 64),
                    Err(ApiError::InvalidLastEventId(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_multi_video_stream_follows_its_videos_once_each_up_to_the_limit() {
        let request = parts(StreamRoute::Videos, Some("videos=a,b,a&videos=c,"));
        let StreamOpen::Videos { videos, owner } = check(&request, &gate(), 3).unwrap() else {
            panic!("a multi-video stream");
        };
        let names: Vec<&str> = videos.iter().map(|(video, _)| video.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(owner, None);
        assert!(matches!(
            check(&request, &gate(), 2),
            Err(ApiError::TooManyVideos { limit: 2 })
        ));
        let bad = parts(StreamRoute::Videos, Some("videos=a,b.c"));
        assert!(matches!(
            check(&bad, &gate(), 64),
            Err(ApiError::InvalidVideoId(_))
        ));
        let none = parts(StreamRoute::Videos, None);
        assert!(matches!(
            check(&none, &gate(), 64),
            Ok(StreamOpen::Videos { videos, .. }) if videos.is_empty()
        ));
    }

    #[test]
    fn a_reconnect_follows_what_its_id_names() {
        let id = b"m1;dc1,dc2;b:5,1;d:0,2";
        let request = StreamParts {
            last_event_id: Some(id),
            ..parts(StreamRoute::Videos, Some("videos=a,b,c"))
        };
        let StreamOpen::Videos { videos, .. } = check(&request, &gate(), 64).unwrap() else {
            panic!("a multi-video stream");
        };
        let names: Vec<&str> = videos.iter().map(|(video, _)| video.as_str()).collect();
        assert_eq!(names, ["b", "d"]);
        assert_eq!(videos[0].1.as_ref().unwrap().seq("dc1"), 5);
        // The single-video route takes its own video's position out of it.
        let single = StreamParts {
            last_event_id: Some(id),
            ..parts(StreamRoute::Video("d"), None)
        };
        assert!(matches!(
            check(&single, &gate(), 64),
            Ok(StreamOpen::Video { resume: Some(position), .. }) if position.seq("dc2") == 2
        ));
        let elsewhere = StreamParts {
            last_event_id: Some(id),
            ..parts(StreamRoute::Video("z"), None)
        };
        assert!(check(&elsewhere, &gate(), 64).is_err());
        // One video's position on a multi-video stream: only with exactly one video.
        let one = StreamParts {
            last_event_id: Some(b"dc1:3"),
            ..parts(StreamRoute::Videos, Some("videos=a"))
        };
        assert!(check(&one, &gate(), 64).is_ok());
        let two = StreamParts {
            last_event_id: Some(b"dc1:3"),
            ..parts(StreamRoute::Videos, Some("videos=a,b"))
        };
        assert!(check(&two, &gate(), 64).is_err());
    }

    #[test]
    fn accept_must_admit_event_streams() {
        for (accept, ok) in [
            (&b"text/event-stream"[..], true),
            (b"text/*;q=0.5, application/json", true),
            (b"*/*", true),
            (b"application/json", false),
            (b"\xff", false),
        ] {
            let request = StreamParts {
                accept: Some(accept),
                ..parts(StreamRoute::Video("v"), None)
            };
            assert_eq!(check(&request, &gate(), 64).is_ok(), ok, "{accept:?}");
        }
    }
}
