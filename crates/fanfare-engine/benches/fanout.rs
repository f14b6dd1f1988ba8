//! The engine alone, in process: what one delivery costs, with no socket, no NATS and no HTTP.
//!
//! Each scenario follows one video (or several) with N connections, delivers comments (and
//! likes), and after each delivery drains every connection's writer the way the raw listener
//! does, counting the bytes each write hands out. It prints nanoseconds per delivery (one
//! comment to one connection) and per write, so a change to the engine can be compared with
//! the build before it on the same machine in the same minute:
//!
//! ```sh
//! cargo bench -p fanfare-engine --bench fanout
//! ```
//!
//! `FANOUT_SCALE=0.1` runs everything ten times shorter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fanfare_engine::{Connection, Hub, HubConfig, StreamKind};
use fanfare_model::{Comment, Delivery, DeliveryPayload, VideoId};
use futures::FutureExt;

fn comment(video: &VideoId, seq: u64) -> Delivery {
    Delivery {
        video_id: video.clone(),
        origin_dc: "dc1".into(),
        origin_seq: seq,
        payload: DeliveryPayload::Comment(Comment {
            video_id: video.clone(),
            comment_id: format!("c{seq:020}"),
            user_id: "bench-user".into(),
            text: "a comment of a typical length, about sixty characters long".into(),
            origin_dc: "dc1".into(),
            published_at: 1_795_782_731_804,
        }),
    }
}

fn like(video: &VideoId, seq: u64) -> Delivery {
    Delivery {
        video_id: video.clone(),
        origin_dc: "dc1".into(),
        origin_seq: seq,
        payload: DeliveryPayload::Likes {
            count: 1,
            total: seq,
        },
    }
}

/// Drains every writer once; returns (writes, bytes).
fn drain(connections: &mut [Connection]) -> (u64, u64) {
    let mut writes = 0;
    let mut bytes = 0;
    for connection in connections.iter_mut() {
        while let Some(Some(chunk)) = connection.next_chunk().now_or_never() {
            writes += 1;
            bytes += chunk.len() as u64;
        }
    }
    (writes, bytes)
}

struct Outcome {
    deliveries: u64,
    writes: u64,
    bytes: u64,
    elapsed: Duration,
}

impl Outcome {
    fn print(&self, name: &str) {
        let nanos = self.elapsed.as_nanos() as f64;
        println!(
            "{name:<44} {:>8.1} ns/delivery {:>8.1} ns/write {:>7.1} B/delivery ({} deliveries in {:.2?})",
            nanos / self.deliveries.max(1) as f64,
            nanos / self.writes.max(1) as f64,
            self.bytes as f64 / self.deliveries.max(1) as f64,
            self.deliveries,
            self.elapsed,
        );
    }
}

/// `viewers` connections of one video; `comments` comments, every `likes_per_comment` likes
/// before each, each followed by a flush and a drain of every writer.
fn one_video(viewers: usize, comments: u64, likes_per_comment: u64) -> Outcome {
    let hub = Hub::new(HubConfig {
        viewer_buffer: 1024,
    });
    let video = VideoId::parse("bench").unwrap();
    let mut connections: Vec<Connection> = (0..viewers)
        .map(|_| {
            let connection = hub.connect(StreamKind::Single);
            hub.follow(&connection.handle(), &video);
            connection
        })
        .collect();
    drain(&mut connections);
    let mut seq = 0;
    let (mut writes, mut bytes) = (0, 0);
    let started = Instant::now();
    for _ in 0..comments {
        for _ in 0..likes_per_comment {
            seq += 1;
            hub.deliver(vec![like(&video, seq)]);
        }
        hub.flush_likes();
        seq += 1;
        hub.deliver(vec![comment(&video, seq)]);
        let (w, b) = drain(&mut connections);
        writes += w;
        bytes += b;
    }
    Outcome {
        deliveries: comments * viewers as u64,
        writes,
        bytes,
        elapsed: started.elapsed(),
    }
}

/// `viewers` connections that each follow `videos` videos; one comment per video per round.
fn multi_video(viewers: usize, videos: usize, rounds: u64) -> Outcome {
    let hub = Hub::new(HubConfig {
        viewer_buffer: 1024,
    });
    let ids: Vec<VideoId> = (0..videos)
        .map(|index| VideoId::parse(&format!("v{index}")).unwrap())
        .collect();
    let mut connections: Vec<Connection> = (0..viewers)
        .map(|index| {
            let connection = hub.connect(StreamKind::Multi {
                connection_id: Arc::from(format!("k{index}")),
            });
            for video in &ids {
                hub.follow(&connection.handle(), video);
            }
            connection
        })
        .collect();
    drain(&mut connections);
    let (mut writes, mut bytes) = (0, 0);
    let started = Instant::now();
    for round in 1..=rounds {
        let batch: Vec<Delivery> = ids.iter().map(|video| comment(video, round)).collect();
        hub.deliver(batch);
        let (w, b) = drain(&mut connections);
        writes += w;
        bytes += b;
    }
    Outcome {
        deliveries: rounds * (viewers * videos) as u64,
        writes,
        bytes,
        elapsed: started.elapsed(),
    }
}

/// Writers on a multi-threaded runtime, woken by the deliveries as the raw listener's are.
fn threaded(viewers: usize, comments: u64) -> Outcome {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let hub = Hub::new(HubConfig {
            viewer_buffer: 4096,
        });
        let video = VideoId::parse("bench").unwrap();
        let totals = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..viewers {
            let mut connection = hub.connect(StreamKind::Single);
            hub.follow(&connection.handle(), &video);
            let totals = totals.clone();
            tasks.push(tokio::spawn(async move {
                let mut writes = 0u64;
                while let Some(chunk) = connection.next_chunk().await {
                    writes += 1;
                    totals.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                writes
            }));
        }
        tokio::task::yield_now().await;
        let started = Instant::now();
        for seq in 1..=comments {
            hub.deliver(vec![comment(&video, seq)]);
            if seq % 16 == 0 {
                tokio::task::yield_now().await;
            }
        }
        hub.close();
        let mut writes = 0;
        for task in tasks {
            writes += task.await.unwrap_or(0);
        }
        Outcome {
            deliveries: comments * viewers as u64,
            writes,
            bytes: totals.load(std::sync::atomic::Ordering::Relaxed),
            elapsed: started.elapsed(),
        }
    })
}

fn main() {
    let scale: f64 = std::env::var("FANOUT_SCALE")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(1.0);
    let n = |count: u64| ((count as f64 * scale).ceil() as u64).max(1);
    one_video(1_000, n(2_000), 0).print("1 video, 1k viewers, comments");
    one_video(1_000, n(2_000), 4).print("1 video, 1k viewers, 4 likes per comment");
    one_video(5_000, n(400), 0).print("1 video, 5k viewers, comments");
    multi_video(1_000, 8, n(250)).print("8 videos per connection, 1k connections");
    threaded(1_000, n(2_000)).print("1 video, 1k viewers, writers on 2 threads");
}
