//! A real Server-Sent Events client over reqwest: reads the response body chunk by
//! chunk as it arrives and splits it into events (id, event, data, retry) and comments.

use std::time::Duration;

/// One frame of an SSE stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frame {
    /// `id:`, if the frame had one.
    pub id: Option<String>,
    /// `event:`, if any.
    pub event: Option<String>,
    /// `data:` lines joined by newlines.
    pub data: String,
    /// `retry:`, if any.
    pub retry: Option<u64>,
    /// Comment lines (`:` ...), e.g. the keep-alive.
    pub comments: Vec<String>,
}

/// An open SSE response.
pub struct Sse {
    /// The response's status and headers.
    pub status: u16,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    response: reqwest::Response,
    buffer: String,
}

impl Sse {
    /// GET `url` with the API key, `Last-Event-ID` if given, and any extra headers.
    pub async fn connect(
        url: &str,
        key: &str,
        last_event_id: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Sse {
        let mut request = reqwest::Client::new()
            .get(url)
            .header("authorization", format!("Bearer {key}"))
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("connect to the stream");
        Sse {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            response,
            buffer: String::new(),
        }
    }

    /// The next frame; None when the server ended the stream. Panics after `patience`.
    pub async fn next(&mut self, patience: Duration) -> Option<Frame> {
        tokio::time::timeout(patience, self.next_frame())
            .await
            .expect("a frame of the event stream in time")
    }

    async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                return Some(parse(&block));
            }
            match self.response.chunk().await {
                Ok(Some(bytes)) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The next frame that is an event (skips retry-only frames and comments).
    pub async fn next_event(&mut self, patience: Duration) -> Option<Frame> {
        loop {
            let frame = self.next(patience).await?;
            if frame.event.is_some() {
                return Some(frame);
            }
        }
    }
}

fn parse(block: &str) -> Frame {
    let mut frame = Frame::default();
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        if let Some(comment) = line.strip_prefix(':') {
            frame.comments.push(comment.trim().to_string());
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => frame.id = Some(value.to_string()),
            "event" => frame.event = Some(value.to_string()),
            "data" => data.push(value),
            "retry" => frame.retry = value.parse().ok(),
            _ => {}
        }
    }
    frame.data = data.join("\n");
    frame
}
