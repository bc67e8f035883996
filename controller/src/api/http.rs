//! Just enough HTTP/1.1 for a local API and a metrics scrape: one `GET` per connection, the
//! answer with a `Content-Length`, then the connection closes. Handlers run on the blocking
//! pool (they read eBPF maps), so a slow one never holds up the daemon's poll.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    path::Path,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, warn};

/// A request head larger than this is refused.
const MAX_HEAD: usize = 8 * 1024;
/// A client that has not sent its request within this is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One request: the method, the path, the decoded query parameters and the headers (names
/// in lower case).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub headers: BTreeMap<String, String>,
}

impl Request {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }
}

/// An answer: status code, content type, body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json<T: serde::Serialize>(value: &T) -> Self {
        match serde_json::to_vec_pretty(value) {
            Ok(body) => Response { status: 200, content_type: "application/json", body },
            Err(e) => Response::error(500, &format!("encoding the answer: {e}")),
        }
    }

    /// `{"error": message}` with `status`.
    pub fn error(status: u16, message: &str) -> Self {
        let body = serde_json::to_vec(&serde_json::json!({ "error": message }))
            .unwrap_or_else(|_| b"{}".to_vec());
        Response { status, content_type: "application/json", body }
    }

    pub fn text(content_type: &'static str, body: String) -> Self {
        Response { status: 200, content_type, body: body.into_bytes() }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    }
}

/// Parses a request head (`GET /path?a=b HTTP/1.1` and headers).
pub fn parse_head(head: &str) -> Result<Request> {
    let line = head.lines().next().context("empty request")?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        bail!("malformed request line {line:?}");
    };
    if !version.starts_with("HTTP/1.") {
        bail!("unsupported protocol {version:?}");
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Request { method: method.to_string(), path: percent_decode(path), query, headers })
}

/// `%XX` and `+` decoded; a malformed escape stays as it is.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `%XX` for everything but unreserved characters.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// Reads one request head, runs `handler` on the blocking pool, writes its answer.
async fn serve_one<S, H>(mut stream: S, handler: Arc<H>) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Fn(Request) -> Response + Send + Sync + 'static,
{
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                bail!("connection closed before the request ended");
            }
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
                return Ok(());
            }
            if head.len() > MAX_HEAD {
                bail!("request head over {MAX_HEAD} bytes");
            }
        }
    };
    tokio::time::timeout(READ_TIMEOUT, read).await.context("request timed out")??;
    let response = match parse_head(&String::from_utf8_lossy(&head)) {
        Ok(req) if req.method != "GET" => Response::error(405, "only GET is served"),
        Ok(req) => {
            debug!(path = %req.path, "API request");
            tokio::task::spawn_blocking(move || handler(req))
                .await
                .unwrap_or_else(|e| Response::error(500, &format!("handler failed: {e}")))
        }
        Err(e) => Response::error(400, &format!("{e:#}")),
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&response.body).await?;
    stream.shutdown().await?;
    Ok(())
}

/// Binds a Unix socket at `path`, mode 0600: the directory is made if needed, a stale socket
/// file (no one answers on it) is replaced, a live one is an error (another daemon runs).
pub fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("{} is in use: another catsd runs with this --api-socket", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("API: listening on {}", path.display()))?;
    // The flows it lists are clients' addresses: the daemon's user (and root) only.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    Ok(listener)
}

/// A listener whose connections the API server answers: the Unix socket or a TCP port.
pub trait Listener: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept_stream(&self) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Listener for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept_stream(&self) -> std::io::Result<Self::Stream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept_stream(&self) -> std::io::Result<Self::Stream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

/// Serves `listener` until the task is aborted; `what` names it in the logs.
pub async fn serve<L, H>(listener: L, what: &'static str, handler: H)
where
    L: Listener,
    H: Fn(Request) -> Response + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    loop {
        match listener.accept_stream().await {
            Ok(stream) => {
                let handler = handler.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_one(stream, handler).await {
                        debug!(error = %format!("{e:#}"), "{what} connection");
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "{what}: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Why a client call failed: the daemon is not there, or it answered with an error.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket (or it cannot be reached).
    #[error(
        "cannot reach catsd at {socket}: {source}\n\
         is the daemon running? Start it with `catsd run --intent DIR --api-socket {socket}`, \
         or point catsctl at its socket with --socket PATH"
    )]
    Unreachable { socket: String, source: std::io::Error },
    /// The daemon answered with an error status.
    #[error("catsd: {message}")]
    Status { status: u16, message: String },
    /// The answer was not HTTP or not what was expected.
    #[error("catsd at {socket} sent a malformed answer: {detail}")]
    Malformed { socket: String, detail: String },
}

/// `GET path` over the Unix socket `socket`; the body of a 200 answer.
pub fn get_unix(socket: &Path, path: &str, timeout: Duration) -> Result<Vec<u8>, ClientError> {
    let name = socket.display().to_string();
    let unreachable = |source| ClientError::Unreachable { socket: name.clone(), source };
    let mut stream = std::os::unix::net::UnixStream::connect(socket).map_err(unreachable)?;
    stream.set_read_timeout(Some(timeout)).map_err(unreachable)?;
    stream.set_write_timeout(Some(timeout)).map_err(unreachable)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: catsd\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(unreachable)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(unreachable)?;
    parse_answer(&answer).map_err(|detail| match detail {
        Answer::Status(status, message) => ClientError::Status { status, message },
        Answer::Malformed(detail) => ClientError::Malformed { socket: name.clone(), detail },
    })
}

enum Answer {
    Status(u16, String),
    Malformed(String),
}

/// The body of a 200 answer; the `error` member of a JSON error body otherwise.
fn parse_answer(answer: &[u8]) -> Result<Vec<u8>, Answer> {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| Answer::Malformed(format!("{} bytes without a header end", answer.len())))?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let body = answer[split + 4..].to_vec();
    let status: u16 = head
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Answer::Malformed(format!("status line {:?}", head.lines().next())))?;
    if status == 200 {
        return Ok(body);
    }
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    Err(Answer::Status(status, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line_path_and_query_are_decoded() {
        let r = parse_head(
            "GET /v1/flows?node=gw&service=plate%2Drecognition&limit=5 HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/v1/flows");
        assert_eq!(r.param("node"), Some("gw"));
        assert_eq!(r.param("service"), Some("plate-recognition"));
        assert_eq!(r.param("limit"), Some("5"));
        assert_eq!(r.param("instance"), None);
        assert_eq!(r.headers.get("host").map(String::as_str), Some("x"));
        assert!(parse_head("GET /\r\n\r\n").is_err());
        assert!(parse_head("GET / SPDY/3\r\n\r\n").is_err());
    }

    #[test]
    fn percent_coding_round_trips_and_tolerates_bad_escapes() {
        for s in ["plate-recognition", "a b/c?d=e&f", "édge"] {
            assert_eq!(percent_decode(&percent_encode(s)), s);
        }
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn answers_give_the_body_or_the_error_message() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_answer(ok).ok(), Some(b"{}".to_vec()));
        let err = b"HTTP/1.1 404 Not Found\r\n\r\n{\"error\":\"no service x\"}";
        assert!(matches!(parse_answer(err), Err(Answer::Status(404, m)) if m == "no service x"));
        assert!(matches!(parse_answer(b"garbage"), Err(Answer::Malformed(_))));
    }
}
