//! An incremental parser of server-sent events, for `agent logs -f`.

/// An incremental parser of the `text/event-stream` format: `event:` and `data:` fields,
/// events separated by a blank line, comments (`:`) ignored.
#[derive(Debug, Default)]
pub(super) struct SseParser {
    buffer: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// Feeds bytes; returns the events completed by them as `(name, data)`.
    pub(super) fn push(&mut self, bytes: &[u8]) -> Vec<(String, String)> {
        self.buffer.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(pos) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches('\n').trim_end_matches('\r');
            if line.is_empty() {
                let name = self.event.take();
                let data = self.data.take();
                if name.is_some() || data.is_some() {
                    out.push((
                        name.unwrap_or_else(|| "message".into()),
                        data.unwrap_or_default(),
                    ));
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "event" => self.event = Some(value.to_string()),
                "data" => match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => self.data = Some(value.to_string()),
                },
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_parsing_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.push(b"event: log\nid: 4\ndata: a").is_empty());
        let got = p.push(b"bc\n\n: keep-alive\n\nevent: log\ndata\n\nevent: end\r\ndata: {\"status\":\"succeeded\"}\r\n\r\n");
        assert_eq!(
            got,
            vec![
                ("log".to_string(), "abc".to_string()),
                ("log".to_string(), String::new()),
                ("end".to_string(), "{\"status\":\"succeeded\"}".to_string()),
            ]
        );
    }
}
