//! Bounds on what requests may take from the server: the size of one request, and how many gRPC
//! calls and alert streams may be open at once. Past a bound the server refuses at once with
//! RESOURCE_EXHAUSTED (HTTP 413 for an oversized form) instead of queueing, so an overloaded or
//! misbehaving client gets a clear answer and everyone else keeps being served.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Body;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};

/// Largest body of an HTTP form post (sign-in, desk and dashboard forms). A physical count of
/// 2000 lines is about 300 KB.
pub const MAX_FORM_BYTES: usize = 1024 * 1024;

/// The ErrorInfo reason of a refused WatchAlerts stream.
pub const TOO_MANY_STREAMS: &str = "TOO_MANY_STREAMS";

/// How much the server takes on at once; see the README's *Limits*.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// gRPC calls in progress across the server; a streaming call counts until its stream ends.
    pub max_concurrent_calls: usize,
    /// Open WatchAlerts streams of one token.
    pub max_watch_streams_per_token: usize,
    /// Open WatchAlerts streams across the server.
    pub max_watch_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_concurrent_calls: 1024, max_watch_streams_per_token: 8, max_watch_streams: 512 }
    }
}

/// Counts open WatchAlerts streams per token and in total.
#[derive(Debug, Default)]
pub(crate) struct StreamCounter(Mutex<(usize, HashMap<String, usize>)>);

/// One open stream; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    counter: Arc<StreamCounter>,
    token_id: String,
}

impl StreamCounter {
    /// Takes a place for a stream of `token_id`, or refuses when either bound is reached.
    pub(crate) fn open(self: &Arc<Self>, token_id: &str, limits: &Limits) -> Result<StreamSlot> {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mine = g.1.get(token_id).copied().unwrap_or(0);
        if mine >= limits.max_watch_streams_per_token {
            return Err(Error::exhausted(
                TOO_MANY_STREAMS,
                format!("this token has {mine} alert streams open, the most allowed; close one first"),
            ));
        }
        if g.0 >= limits.max_watch_streams {
            return Err(Error::exhausted(TOO_MANY_STREAMS, "the server has as many alert streams open as it allows"));
        }
        g.0 += 1;
        *g.1.entry(token_id.to_owned()).or_default() += 1;
        Ok(StreamSlot { counter: self.clone(), token_id: token_id.to_owned() })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut g = self.counter.0.lock().unwrap_or_else(|p| p.into_inner());
        g.0 = g.0.saturating_sub(1);
        if let Some(n) = g.1.get_mut(&self.token_id) {
            *n -= 1;
            if *n == 0 {
                g.1.remove(&self.token_id);
            }
        }
    }
}

/// Middleware state: the places for gRPC calls in progress.
#[derive(Debug, Clone)]
pub(crate) struct CallLimit(Arc<Semaphore>);

impl CallLimit {
    pub(crate) fn new(limits: &Limits) -> Self {
        CallLimit(Arc::new(Semaphore::new(limits.max_concurrent_calls.max(1))))
    }

    /// Runs a call if a place is free, holding the place until the response body (a stream's
    /// last message and trailers) is done; refuses with RESOURCE_EXHAUSTED otherwise.
    pub(crate) async fn run(
        self,
        req: axum::extract::Request,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        let Ok(permit) = self.0.try_acquire_owned() else {
            let status = tonic::Status::resource_exhausted(
                "the server has as many calls in progress as it allows; retry shortly",
            );
            return status.into_http::<Body>();
        };
        next.run(req).await.map(|inner| Body::new(HeldBody { inner, _permit: permit }))
    }
}

/// A response body that keeps a call's place until it is dropped.
struct HeldBody {
    inner: Body,
    _permit: OwnedSemaphorePermit,
}

impl HttpBody for HeldBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
