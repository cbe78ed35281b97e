//! Confluent Schema Registry client: the REST calls the wire format needs
//! (look a schema up by id, register a schema under a subject), with caches,
//! over `reqwest` (blocking, rustls): `http://` and `https://` (system roots
//! plus an optional PEM CA file), basic auth from the URL's user info or the
//! options. Confluent framing is `0x00`, a 4-byte big-endian schema id, then
//! the Avro datum.
//!
//! Everything the registry sends is treated as hostile: bodies are read with
//! a size limit (never into memory whole), the registry's JSON is parsed into
//! typed structs, a schema's nesting depth is checked before the Avro parser
//! sees it, and recursive named types (whose decoding recursion is driven by
//! the datum) are refused. Errors say whether they are worth retrying
//! ([`SchemaRegistryError::is_transient`]) and never contain credentials.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use apache_avro::Schema;
use reqwest::blocking::{Client, Response};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, Url};
use serde::Deserialize;

use super::KnownSchema;

/// First byte of a Confluent-framed record.
pub const CONFLUENT_MAGIC: u8 = 0;
/// Magic byte + schema id.
pub const CONFLUENT_HEADER_LEN: usize = 5;

/// The registry's media type (requests and responses).
pub const REGISTRY_CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
const REGISTRY_ACCEPT: &str =
    "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json, application/json";
/// Confluent's error code for "schema not found".
pub const SCHEMA_NOT_FOUND_CODE: i64 = 40403;
/// At most this many ids are remembered as missing (a stream of random ids
/// must not grow the cache without bound).
const NEGATIVE_CACHE_MAX: usize = 4096;
/// Bytes of an error response read for its message.
const ERROR_BODY_MAX: usize = 4096;
/// Characters of a registry-supplied message kept in an error.
const MESSAGE_MAX_CHARS: usize = 300;
/// Largest CA file read.
const CA_FILE_MAX: u64 = 4 << 20;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Basic-auth credentials (Debug shows neither part).
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub username: String,
    pub password: Option<String>,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BasicAuth(***)")
    }
}

/// How a [`SchemaRegistry`] connects and what it accepts.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// PEM file with CA certificate(s) trusted for `https://`, besides the
    /// system roots.
    pub ca_file: Option<PathBuf>,
    /// Whole request, response body included [default: 5 s].
    pub timeout: Duration,
    /// TCP connect and TLS handshake [default: 2 s].
    pub connect_timeout: Duration,
    /// Largest response body accepted [default: 1 MiB].
    pub max_response_bytes: usize,
    /// Deepest nesting (`{`/`[` levels) of a schema's JSON [default: 32].
    pub max_schema_depth: usize,
    /// How long an id the registry does not know (or whose schema is
    /// refused) is answered from memory [default: 60 s; zero: not cached].
    pub negative_ttl: Duration,
    /// Credentials; take precedence over the URL's user info.
    pub basic_auth: Option<BasicAuth>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        let limits = ResponseLimits::default();
        Self {
            ca_file: None,
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            max_response_bytes: limits.max_response_bytes,
            max_schema_depth: limits.max_schema_depth,
            negative_ttl: Duration::from_secs(60),
            basic_auth: None,
        }
    }
}

impl RegistryOptions {
    pub fn limits(&self) -> ResponseLimits {
        ResponseLimits {
            max_response_bytes: self.max_response_bytes,
            max_schema_depth: self.max_schema_depth,
        }
    }
}

/// Bounds on what [`parse_schema_response`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseLimits {
    pub max_response_bytes: usize,
    pub max_schema_depth: usize,
}

impl Default for ResponseLimits {
    fn default() -> Self {
        Self {
            max_response_bytes: 1 << 20,
            max_schema_depth: 32,
        }
    }
}

/// A failed registry call. URLs in it never carry credentials.
#[derive(Debug, thiserror::Error)]
pub enum SchemaRegistryError {
    /// A URL that parses but cannot be used (shown with its user info as `***`).
    #[error("schema registry URL {0}: expected http[s]://[user:password@]host[:port][/path]")]
    Url(String),
    /// A URL that does not parse (shown with its user info as `***`).
    #[error("schema registry URL {url} does not parse")]
    UrlParse {
        url: String,
        #[source]
        source: BoxError,
    },
    #[error("schema registry CA file {path}: {detail}")]
    CaFile {
        path: String,
        detail: String,
        #[source]
        source: Option<BoxError>,
    },
    #[error("cannot set up the schema registry HTTP client")]
    Client {
        #[source]
        source: BoxError,
    },
    /// Connection refused, DNS, TLS handshake: transient.
    #[error("schema registry {url}: cannot connect")]
    Connect {
        url: String,
        #[source]
        source: BoxError,
    },
    /// Transient.
    #[error("schema registry {url}: timed out")]
    Timeout {
        url: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The connection failed mid-request or mid-response: transient.
    #[error("schema registry {url}: the request failed")]
    Transport {
        url: String,
        #[source]
        source: BoxError,
    },
    /// A non-2xx answer; transient for 5xx, 429 and 408.
    #[error("schema registry {url} answered HTTP {status}: {message}")]
    Status {
        url: String,
        status: u16,
        /// Confluent's `error_code`, when the body had one.
        error_code: Option<i64>,
        /// The registry's message, truncated, control characters removed.
        message: String,
    },
    /// HTTP 404 / error code 40403 for a schema id (negatively cached).
    #[error("schema registry {url}: schema id {id} not found")]
    SchemaNotFound { url: String, id: u32 },
    #[error("schema registry response is larger than the {limit}-byte limit")]
    TooLarge { limit: usize, length: Option<u64> },
    #[error("schema registry response to {what} is not the expected JSON")]
    BadResponse {
        what: &'static str,
        #[source]
        source: Quoted,
    },
    #[error("schema registry returned a {schema_type:?} schema, not Avro")]
    NotAvro { schema_type: String },
    #[error("schema from the registry nests deeper than {limit} levels")]
    SchemaTooDeep { limit: usize },
    #[error("schema {id} from the registry does not parse")]
    Schema {
        id: u32,
        #[source]
        source: Quoted,
    },
    /// Parses, but is not accepted (recursive type), or failed before and
    /// is answered from the negative cache.
    #[error("schema {id} from the registry is refused: {detail}")]
    SchemaRefused { id: u32, detail: String },
}

impl SchemaRegistryError {
    /// Worth waiting and retrying (the registry or the network is at fault,
    /// not the record): connect errors, timeouts, broken connections, HTTP
    /// 5xx, 429 and 408. Everything else (404/40403, other 4xx, oversized or
    /// unparsable answers, refused schemas, bad configuration) is permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            SchemaRegistryError::Connect { .. }
            | SchemaRegistryError::Timeout { .. }
            | SchemaRegistryError::Transport { .. } => true,
            SchemaRegistryError::Status { status, .. } => {
                *status >= 500 || *status == 429 || *status == 408
            }
            _ => false,
        }
    }

    /// The registry does not know the schema id.
    pub fn is_not_found(&self) -> bool {
        matches!(self, SchemaRegistryError::SchemaNotFound { .. })
    }
}

/// Why an id is remembered as unusable.
#[derive(Debug, Clone)]
enum Negative {
    NotFound,
    Refused(String),
}

/// A registry connection with its caches (Debug shows no credentials).
pub struct SchemaRegistry {
    /// Without credentials, no trailing slash: what errors and logs show.
    url: String,
    /// Base URL (credentials removed) the REST paths are appended to.
    base: Url,
    auth: Option<BasicAuth>,
    options: RegistryOptions,
    client: Client,
    by_id: RwLock<HashMap<u32, Arc<KnownSchema>>>,
    negative: Mutex<HashMap<u32, (Instant, Negative)>>,
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl SchemaRegistry {
    /// A registry at `url` (`http[s]://[user:password@]host[:port][/path]`)
    /// with the default options.
    pub fn new(url: &str) -> Result<Self, SchemaRegistryError> {
        Self::with_options(url, RegistryOptions::default())
    }

    pub fn with_options(url: &str, options: RegistryOptions) -> Result<Self, SchemaRegistryError> {
        let (base, shown, url_auth) = parse_url(url)?;
        let auth = options.basic_auth.clone().or(url_auth);
        let client = off_runtime(&shown, || build_client(&options))?;
        Ok(Self {
            url: shown,
            base,
            auth,
            options,
            client,
            by_id: RwLock::new(HashMap::new()),
            negative: Mutex::new(HashMap::new()),
        })
    }

    /// The registry's URL without credentials.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn options(&self) -> &RegistryOptions {
        &self.options
    }

    /// `GET /schemas/ids/{id}`, cached; ids the registry does not know are
    /// remembered for [`RegistryOptions::negative_ttl`]. An id above
    /// `i32::MAX` is not found without asking.
    pub fn schema(&self, id: u32) -> Result<Arc<KnownSchema>, SchemaRegistryError> {
        if let Some(s) = self
            .by_id
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Ok(s.clone());
        }
        // Registry ids are Java ints (Confluent's and Apicurio's REST APIs
        // take the id as a signed 32-bit path parameter): one above
        // i32::MAX names no schema. Asked anyway, a registry answers a 404
        // that is not "schema not found" (Apicurio: error code 0, "Unable to
        // extract parameter"), which is neither recognised nor cached, so
        // every such record would ask again.
        if id > i32::MAX as u32 {
            return Err(self.not_found(id));
        }
        if let Some(e) = self.negatively_cached(id) {
            return Err(e);
        }
        let url = self.endpoint(&["schemas", "ids", &id.to_string()])?;
        let reply = match self.execute(Method::GET, url, None) {
            Ok(r) => r,
            Err(e @ SchemaRegistryError::TooLarge { .. }) => {
                self.remember(id, Negative::Refused(refusal(&e)));
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if !reply.status.is_success() {
            let e = self.status_error(&reply);
            if let SchemaRegistryError::Status {
                status: 404,
                error_code: None | Some(SCHEMA_NOT_FOUND_CODE),
                ..
            } = e
            {
                tracing::debug!(registry = %self.url, id, "schema id not found");
                self.remember(id, Negative::NotFound);
                return Err(self.not_found(id));
            }
            return Err(e);
        }
        // The schema behind an id never changes: a refused one is refused
        // again for a while without asking.
        let parsed = parse_schema_response(&reply.body, &self.options.limits())
            .and_then(|text| parse_registry_schema(id, &text));
        let s = match parsed {
            Ok(s) => Arc::new(s),
            Err(e) => {
                self.remember(id, Negative::Refused(refusal(&e)));
                return Err(e);
            }
        };
        tracing::debug!(registry = %self.url, id, schema = %s.full_name, "schema fetched");
        self.by_id
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, s.clone());
        Ok(s)
    }

    /// `POST /subjects/{subject}/versions`: registers (or finds) a schema; returns its id.
    pub fn register(
        &self,
        subject: &str,
        schema: &KnownSchema,
        text: &str,
    ) -> Result<u32, SchemaRegistryError> {
        let url = self.endpoint(&["subjects", subject, "versions"])?;
        let body = serde_json::json!({ "schema": text }).to_string();
        let reply = self.execute(Method::POST, url, Some(body))?;
        if !reply.status.is_success() {
            return Err(self.status_error(&reply));
        }
        let id = parse_register_response(&reply.body)?;
        self.negative
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        self.by_id
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::new(schema.clone()));
        Ok(id)
    }

    fn not_found(&self, id: u32) -> SchemaRegistryError {
        SchemaRegistryError::SchemaNotFound {
            url: self.url.clone(),
            id,
        }
    }

    fn negatively_cached(&self, id: u32) -> Option<SchemaRegistryError> {
        let mut neg = self.negative.lock().unwrap_or_else(|e| e.into_inner());
        let (until, why) = neg.get(&id)?;
        if Instant::now() >= *until {
            neg.remove(&id);
            return None;
        }
        Some(match why {
            Negative::NotFound => self.not_found(id),
            Negative::Refused(detail) => SchemaRegistryError::SchemaRefused {
                id,
                detail: format!("{detail} (cached)"),
            },
        })
    }

    fn remember(&self, id: u32, why: Negative) {
        let ttl = self.options.negative_ttl;
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut neg = self.negative.lock().unwrap_or_else(|e| e.into_inner());
        if neg.len() >= NEGATIVE_CACHE_MAX {
            neg.retain(|_, (until, _)| *until > now);
            if neg.len() >= NEGATIVE_CACHE_MAX {
                if let Some(k) = neg.keys().next().copied() {
                    neg.remove(&k);
                }
            }
        }
        neg.insert(id, (now + ttl, why));
    }

    /// The base URL with `segments` appended (each percent-encoded).
    fn endpoint(&self, segments: &[&str]) -> Result<Url, SchemaRegistryError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| SchemaRegistryError::Url(self.url.clone()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// One request; a 2xx body is read whole (up to the limit), another
    /// answer's body only as far as its message needs.
    fn execute(
        &self,
        method: Method,
        url: Url,
        body: Option<String>,
    ) -> Result<Reply, SchemaRegistryError> {
        off_runtime(&self.url, || {
            let deadline = Instant::now() + self.options.timeout;
            let mut req = self
                .client
                .request(method, url)
                .header(ACCEPT, REGISTRY_ACCEPT);
            if let Some(body) = body {
                req = req.header(CONTENT_TYPE, REGISTRY_CONTENT_TYPE).body(body);
            }
            if let Some(a) = &self.auth {
                req = req.basic_auth(&a.username, a.password.as_ref());
            }
            let mut resp = req.send().map_err(|e| self.request_error(e))?;
            let status = resp.status();
            let body = if status.is_success() {
                read_limited(&mut resp, self.options.max_response_bytes, deadline, false)
                    .map_err(|e| self.read_error(e))?
            } else {
                // Only for the message: whatever arrives, cut short.
                read_limited(&mut resp, ERROR_BODY_MAX, deadline, true).unwrap_or_default()
            };
            Ok(Reply { status, body })
        })
    }

    fn request_error(&self, e: reqwest::Error) -> SchemaRegistryError {
        let url = self.url.clone();
        let (timeout, connect, builder) = (e.is_timeout(), e.is_connect(), e.is_builder());
        // Our own error names the URL (without credentials) already.
        let source: BoxError = Box::new(e.without_url());
        if timeout {
            SchemaRegistryError::Timeout {
                url,
                source: Some(source),
            }
        } else if connect {
            SchemaRegistryError::Connect { url, source }
        } else if builder {
            SchemaRegistryError::Client { source }
        } else {
            SchemaRegistryError::Transport { url, source }
        }
    }

    fn read_error(&self, e: ReadFail) -> SchemaRegistryError {
        let url = self.url.clone();
        match e {
            ReadFail::TooLarge(length) => SchemaRegistryError::TooLarge {
                limit: self.options.max_response_bytes,
                length,
            },
            ReadFail::Deadline => SchemaRegistryError::Timeout { url, source: None },
            ReadFail::Io(e) => {
                let timed_out = e.kind() == std::io::ErrorKind::TimedOut
                    || e.get_ref()
                        .and_then(|i| i.downcast_ref::<reqwest::Error>())
                        .is_some_and(reqwest::Error::is_timeout);
                if timed_out {
                    SchemaRegistryError::Timeout {
                        url,
                        source: Some(Box::new(e)),
                    }
                } else {
                    SchemaRegistryError::Transport {
                        url,
                        source: Box::new(e),
                    }
                }
            }
        }
    }

    fn status_error(&self, reply: &Reply) -> SchemaRegistryError {
        let (error_code, mut message) = parse_error_body(&reply.body);
        if message.trim().is_empty() {
            message = reply.status.canonical_reason().unwrap_or("").to_string();
        }
        let message = match error_code {
            Some(c) => format!("error code {c}: {message}"),
            None => message,
        };
        SchemaRegistryError::Status {
            url: self.url.clone(),
            status: reply.status.as_u16(),
            error_code,
            message,
        }
    }
}

/// What a refused lookup is remembered as.
fn refusal(e: &SchemaRegistryError) -> String {
    match e {
        SchemaRegistryError::SchemaRefused { detail, .. } => detail.clone(),
        other => crate::outcome::chain(other).to_string(),
    }
}

struct Reply {
    status: reqwest::StatusCode,
    body: Vec<u8>,
}

enum ReadFail {
    TooLarge(Option<u64>),
    Deadline,
    Io(std::io::Error),
}

/// Reads a body up to `limit` bytes: refused when larger (checked on the
/// announced length first, then as it arrives), or cut at `limit` when
/// `truncate`. The whole read must end by `deadline`.
fn read_limited(
    resp: &mut Response,
    limit: usize,
    deadline: Instant,
    truncate: bool,
) -> Result<Vec<u8>, ReadFail> {
    let announced = resp.content_length();
    if let Some(len) = announced {
        if !truncate && len > limit as u64 {
            return Err(ReadFail::TooLarge(Some(len)));
        }
    }
    let cap = announced.map_or(8192, |l| usize::try_from(l).unwrap_or(limit));
    let mut buf = Vec::with_capacity(cap.min(limit));
    let mut chunk = [0u8; 8192];
    loop {
        if Instant::now() >= deadline {
            return Err(ReadFail::Deadline);
        }
        let n = match resp.read(&mut chunk) {
            Ok(0) => return Ok(buf),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadFail::Io(e)),
        };
        let room = limit - buf.len();
        if n > room {
            if truncate {
                buf.extend_from_slice(&chunk[..room]);
                return Ok(buf);
            }
            return Err(ReadFail::TooLarge(announced));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Runs blocking HTTP work off any tokio runtime the caller is on
/// (`reqwest::blocking` must not run inside one).
fn off_runtime<T: Send>(
    url: &str,
    f: impl FnOnce() -> Result<T, SchemaRegistryError> + Send,
) -> Result<T, SchemaRegistryError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("schema-registry".into())
            .spawn_scoped(s, f)
            .map_err(|e| SchemaRegistryError::Transport {
                url: url.to_string(),
                source: Box::new(e),
            })?;
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

fn build_client(options: &RegistryOptions) -> Result<Client, SchemaRegistryError> {
    let mut b = Client::builder()
        .use_rustls_tls()
        .timeout(options.timeout)
        .connect_timeout(options.connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .referer(false)
        .user_agent(concat!("riskstream/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &options.ca_file {
        let shown = path.display().to_string();
        let ca_err = |detail: &str, source: Option<BoxError>| SchemaRegistryError::CaFile {
            path: shown.clone(),
            detail: detail.to_string(),
            source,
        };
        let mut pem = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(CA_FILE_MAX + 1).read_to_end(&mut pem))
            .map_err(|e| ca_err("cannot read it", Some(Box::new(e))))?;
        if pem.len() as u64 > CA_FILE_MAX {
            return Err(ca_err("larger than 4 MiB", None));
        }
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| ca_err("not a PEM certificate bundle", Some(Box::new(e))))?;
        if certs.is_empty() {
            return Err(ca_err("holds no PEM certificate", None));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build().map_err(|e| SchemaRegistryError::Client {
        source: Box::new(e),
    })
}

/// `url` with anything that may be user info (scheme to the last `@`) as `***`.
fn redact(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    match url[start..].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_string(),
    }
}

/// Base URL (no credentials, no trailing slash), the URL to show, and the
/// URL's credentials.
fn parse_url(raw: &str) -> Result<(Url, String, Option<BasicAuth>), SchemaRegistryError> {
    let mut url = Url::parse(raw).map_err(|e| SchemaRegistryError::UrlParse {
        url: redact(raw),
        source: Box::new(e),
    })?;
    let unusable = !matches!(url.scheme(), "http" | "https")
        || url.cannot_be_a_base()
        || url.host_str().is_none_or(str::is_empty)
        || url.query().is_some()
        || url.fragment().is_some();
    if unusable {
        return Err(SchemaRegistryError::Url(redact(raw)));
    }
    let auth = (!url.username().is_empty() || url.password().is_some()).then(|| BasicAuth {
        username: percent_decode(url.username()),
        password: url.password().map(percent_decode),
    });
    if url.set_username("").is_err() || url.set_password(None).is_err() {
        return Err(SchemaRegistryError::Url(redact(raw)));
    }
    let path = url.path().trim_end_matches('/').to_string();
    url.set_path(&path);
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return Err(SchemaRegistryError::Url(redact(raw)));
    };
    let shown = format!("{}://{host}:{port}{path}", url.scheme());
    Ok((url, shown, auth))
}

/// `%XX` decoding of URL user info (invalid escapes kept as they are).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' {
            if let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A cause whose text may quote what the registry sent (serde and the Avro
/// parser quote values): shown as one message, its own causes included
/// ([`crate::outcome::chain`]), bounded and without control characters
/// like [`sanitize`]. The original error is kept for `Debug`.
#[derive(Debug)]
pub struct Quoted(BoxError);

impl Quoted {
    fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(e))
    }
}

impl std::fmt::Display for Quoted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e: &(dyn std::error::Error + 'static) = &*self.0;
        f.write_str(&sanitize(&crate::outcome::chain(e).to_string()))
    }
}

/// No `source`: its causes are in its text, sanitized.
impl std::error::Error for Quoted {}

/// A registry-supplied message made safe to log: control characters
/// replaced, cut at [`MESSAGE_MAX_CHARS`].
fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(MESSAGE_MAX_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().nth(MESSAGE_MAX_CHARS).is_some() {
        out.push('…');
    }
    out
}

#[derive(Deserialize)]
struct SchemaResponse {
    schema: String,
    #[serde(rename = "schemaType", default)]
    schema_type: Option<String>,
}

#[derive(Deserialize)]
struct RegisterResponse {
    id: u32,
}

#[derive(Deserialize)]
struct ErrorResponse {
    #[serde(default)]
    error_code: Option<i64>,
    #[serde(default)]
    message: Option<String>,
}

/// Confluent's `{"error_code": N, "message": "..."}`, or the body as text.
fn parse_error_body(body: &[u8]) -> (Option<i64>, String) {
    match serde_json::from_slice::<ErrorResponse>(body) {
        Ok(e) => (e.error_code, sanitize(e.message.as_deref().unwrap_or(""))),
        Err(_) => (None, sanitize(&String::from_utf8_lossy(body))),
    }
}

/// The schema text of a `GET /schemas/ids/{id}` answer (`{"schema": "..."}`),
/// checked against `limits`: the body's size, `schemaType` (absent or AVRO),
/// and the nesting depth of the schema's JSON. Never panics.
pub fn parse_schema_response(
    body: &[u8],
    limits: &ResponseLimits,
) -> Result<String, SchemaRegistryError> {
    if body.len() > limits.max_response_bytes {
        return Err(SchemaRegistryError::TooLarge {
            limit: limits.max_response_bytes,
            length: Some(body.len() as u64),
        });
    }
    let r: SchemaResponse =
        serde_json::from_slice(body).map_err(|source| SchemaRegistryError::BadResponse {
            what: "a schema lookup",
            source: Quoted::new(source),
        })?;
    if let Some(t) = r.schema_type.filter(|t| !t.eq_ignore_ascii_case("AVRO")) {
        return Err(SchemaRegistryError::NotAvro {
            schema_type: sanitize(&t),
        });
    }
    if json_depth_exceeds(&r.schema, limits.max_schema_depth) {
        return Err(SchemaRegistryError::SchemaTooDeep {
            limit: limits.max_schema_depth,
        });
    }
    Ok(r.schema)
}

/// The id of a `POST /subjects/{subject}/versions` answer (`{"id": N}`).
/// Never panics.
pub fn parse_register_response(body: &[u8]) -> Result<u32, SchemaRegistryError> {
    serde_json::from_slice::<RegisterResponse>(body)
        .map(|r| r.id)
        .map_err(|source| SchemaRegistryError::BadResponse {
            what: "a schema registration",
            source: Quoted::new(source),
        })
}

/// An Avro schema from the registry (text from [`parse_schema_response`]):
/// parsed (a panic in the parser is an error), and refused when a named
/// type contains itself. Recursive types are legal Avro, but decoding them
/// recurses as deep as the datum says, so a hostile record could exhaust
/// the stack; riskstream's records are flat.
pub fn parse_registry_schema(id: u32, text: &str) -> Result<KnownSchema, SchemaRegistryError> {
    // apache-avro 0.21 panics on some invalid names (it unwraps their
    // validation): refuse those first; a panic elsewhere is still caught.
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(text) {
        check_names(&json).map_err(|detail| SchemaRegistryError::SchemaRefused { id, detail })?;
    }
    let parsed =
        std::panic::catch_unwind(|| KnownSchema::parse(text, &format!("registry id {id}")))
            .map_err(|_| SchemaRegistryError::SchemaRefused {
                id,
                detail: "the Avro schema parser panicked".into(),
            })?;
    let s = parsed.map_err(|e| SchemaRegistryError::Schema {
        id,
        source: Quoted::new(e),
    })?;
    if let Some(name) = recursive_type(&s.schema) {
        return Err(SchemaRegistryError::SchemaRefused {
            id,
            detail: format!("recursive type {}", sanitize(&name)),
        });
    }
    Ok(s)
}

/// Checks the names, namespaces and aliases of the named types (record,
/// error, enum, fixed) at the schema positions of a schema's JSON. As deep
/// as the JSON (bounded before).
fn check_names(v: &serde_json::Value) -> Result<(), String> {
    use serde_json::Value as J;
    let o = match v {
        J::Array(union) => return union.iter().try_for_each(check_names),
        J::Object(o) => o,
        _ => return Ok(()),
    };
    let named = matches!(
        o.get("type").and_then(J::as_str),
        Some("record" | "error" | "enum" | "fixed")
    );
    if named {
        if let Some(J::String(n)) = o.get("name") {
            if !valid_fullname(n) {
                return Err(format!("invalid type name {:?}", sanitize(n)));
            }
        }
        if let Some(J::String(ns)) = o.get("namespace") {
            if !ns.is_empty() && !ns.split('.').all(valid_identifier) {
                return Err(format!("invalid namespace {:?}", sanitize(ns)));
            }
        }
        if let Some(J::Array(aliases)) = o.get("aliases") {
            for a in aliases {
                if let J::String(a) = a {
                    if !valid_fullname(a) {
                        return Err(format!("invalid alias {:?}", sanitize(a)));
                    }
                }
            }
        }
    }
    for key in ["type", "items", "values"] {
        if let Some(t) = o.get(key) {
            check_names(t)?;
        }
    }
    if let Some(J::Array(fields)) = o.get("fields") {
        for t in fields.iter().filter_map(|f| f.get("type")) {
            check_names(t)?;
        }
    }
    Ok(())
}

/// `[A-Za-z_][A-Za-z0-9_]*`
fn valid_identifier(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// An Avro full name: `[namespace.]name`, the namespace possibly empty.
fn valid_fullname(s: &str) -> bool {
    match s.rsplit_once('.') {
        None => valid_identifier(s),
        Some((ns, name)) => {
            valid_identifier(name) && (ns.is_empty() || ns.split('.').all(valid_identifier))
        }
    }
}

/// Whether `text`, read as JSON, nests `{`/`[` deeper than `max` (strings
/// skipped). Linear, no recursion.
fn json_depth_exceeds(text: &str, max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &c in text.as_bytes() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The full name of a named type that refers to itself, directly or
/// through others, if any. The walk over the schema is as deep as its JSON
/// (bounded before parsing); the cycle search is iterative.
fn recursive_type(schema: &Schema) -> Option<String> {
    fn collect(s: &Schema, owner: Option<&str>, edges: &mut HashMap<String, Vec<String>>) {
        let named = |name: String, edges: &mut HashMap<String, Vec<String>>| {
            if let Some(o) = owner {
                edges.entry(o.to_string()).or_default().push(name.clone());
            }
            edges.entry(name.clone()).or_default();
            name
        };
        match s {
            Schema::Record(r) => {
                let name = named(r.name.fullname(None), edges);
                for f in &r.fields {
                    collect(&f.schema, Some(&name), edges);
                }
            }
            Schema::Enum(e) => {
                named(e.name.fullname(None), edges);
            }
            Schema::Fixed(f) => {
                named(f.name.fullname(None), edges);
            }
            Schema::Ref { name } => {
                named(name.fullname(None), edges);
            }
            Schema::Decimal(d) => collect(&d.inner, owner, edges),
            Schema::Array(a) => collect(&a.items, owner, edges),
            Schema::Map(m) => collect(&m.types, owner, edges),
            Schema::Union(u) => {
                for v in u.variants() {
                    collect(v, owner, edges);
                }
            }
            _ => {}
        }
    }
    let mut edges = HashMap::new();
    collect(schema, None, &mut edges);
    // Depth-first search, colours: absent = unseen, false = on the stack,
    // true = done.
    let mut state: HashMap<&str, bool> = HashMap::new();
    for start in edges.keys() {
        if state.contains_key(start.as_str()) {
            continue;
        }
        state.insert(start.as_str(), false);
        let mut stack: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
        while let Some((node, next)) = stack.pop() {
            let out = edges.get(node).map_or(&[][..], Vec::as_slice);
            match out.get(next) {
                None => {
                    state.insert(node, true);
                }
                Some(to) => {
                    stack.push((node, next + 1));
                    match state.get(to.as_str()) {
                        Some(false) => return Some(to.clone()),
                        Some(true) => {}
                        None => {
                            state.insert(to.as_str(), false);
                            stack.push((to.as_str(), 0));
                        }
                    }
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_credentials_out_of_sight() {
        let r = SchemaRegistry::new("http://user:s%40cret@sr.local:8081/api/").unwrap();
        assert_eq!(r.url(), "http://sr.local:8081/api");
        assert_eq!(r.base.as_str(), "http://sr.local:8081/api");
        assert_eq!(
            r.auth,
            Some(BasicAuth {
                username: "user".into(),
                password: Some("s@cret".into())
            })
        );
        let shown = format!("{r:?} {:?}", r.options);
        assert!(!shown.contains("cret"), "{shown}");
        assert_eq!(
            r.endpoint(&["subjects", "a/b c", "versions"])
                .unwrap()
                .as_str(),
            "http://sr.local:8081/api/subjects/a%2Fb%20c/versions"
        );
        let r = SchemaRegistry::new("https://sr").unwrap();
        assert_eq!(r.url(), "https://sr:443");
        assert_eq!(
            r.endpoint(&["schemas", "ids", "7"]).unwrap().as_str(),
            "https://sr/schemas/ids/7"
        );
        for bad in [
            "http://user:secret@sr:notaport",
            "user:secret@sr:8081",
            "ftp://user:secret@sr/",
            "http://user:sec/ret@sr",
            "http://sr:8081/?user=x:secret@",
            "",
        ] {
            let e = SchemaRegistry::new(bad).unwrap_err();
            let mut all = format!("{e} {e:?}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                all.push_str(&format!(" {s} {s:?}"));
                src = s.source();
            }
            assert!(
                !all.contains("secret") && !all.contains("ret@"),
                "{bad}: {all}"
            );
            assert!(!e.is_transient());
        }
        assert_eq!(redact("http://u:p@h:1/x"), "http://***@h:1/x");
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
    }

    #[test]
    fn depth_is_counted_outside_strings() {
        assert!(!json_depth_exceeds(r#"{"a":[{"b":"[[[[{{{{"}]}"#, 3));
        assert!(json_depth_exceeds(r#"{"a":[{"b":[1]}]}"#, 3));
        assert!(!json_depth_exceeds(r#""\"[[[""#, 0));
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(json_depth_exceeds(&deep, 32));
    }

    #[test]
    fn recursive_types_are_refused() {
        let ok = super::super::TRANSACTION_SCHEMA;
        assert!(parse_registry_schema(1, ok).is_ok());
        for text in [
            r#"{"type":"record","name":"A","fields":[{"name":"a","type":"A"}]}"#,
            r#"{"type":"record","name":"A","namespace":"n","fields":[{"name":"a","type":["null","A"]}]}"#,
            r#"{"type":"record","name":"A","namespace":"n","fields":[{"name":"a","type":{"type":"array","items":"n.A"}}]}"#,
            r#"{"type":"record","name":"A","fields":[{"name":"b","type":{"type":"record","name":"B","fields":[{"name":"a","type":{"type":"map","values":"A"}}]}}]}"#,
        ] {
            let e = parse_registry_schema(2, text).unwrap_err();
            assert!(
                matches!(e, SchemaRegistryError::SchemaRefused { .. }),
                "{text}: {e}"
            );
        }
        // Names apache-avro would panic on: refused, no panic.
        for text in [
            r#"{"type":"record","name":"4","fields":[]}"#,
            r#"{"type":"record","name":"R","fields":[{"name":"e","type":{"type":"enum","name":"a-b","symbols":["A"]}}]}"#,
            r#"{"type":"fixed","name":"F","size":2,"aliases":["x y"]}"#,
            r#"["null",{"type":"record","name":"R","namespace":"a..b","fields":[]}]"#,
        ] {
            let e = parse_registry_schema(4, text).unwrap_err();
            assert!(
                matches!(e, SchemaRegistryError::SchemaRefused { .. }),
                "{text}: {e}"
            );
        }
        assert!(valid_fullname(".A") && valid_fullname("a.b_1.C") && !valid_fullname("a..B"));
        // The same type twice is not recursion.
        let twice = r#"{"type":"record","name":"A","fields":[
            {"name":"x","type":{"type":"fixed","name":"F","size":2}},
            {"name":"y","type":"F"},
            {"name":"z","type":{"type":"record","name":"B","fields":[{"name":"f","type":"F"}]}},
            {"name":"w","type":["null","B"]}]}"#;
        assert!(parse_registry_schema(3, twice).is_ok());
    }

    #[test]
    fn responses_parse_into_typed_values() {
        let lim = ResponseLimits::default();
        assert_eq!(
            parse_schema_response(br#"{"schema":"\"string\"","id":3}"#, &lim).unwrap(),
            "\"string\""
        );
        assert_eq!(
            parse_schema_response(br#"{"schema":"\"int\"","schemaType":"AVRO"}"#, &lim).unwrap(),
            "\"int\""
        );
        assert!(matches!(
            parse_schema_response(br#"{"schema":"x","schemaType":"PROTOBUF"}"#, &lim),
            Err(SchemaRegistryError::NotAvro { .. })
        ));
        assert!(matches!(
            parse_schema_response(br#"{"schema":7}"#, &lim),
            Err(SchemaRegistryError::BadResponse { .. })
        ));
        let small = ResponseLimits {
            max_response_bytes: 8,
            ..lim
        };
        assert!(matches!(
            parse_schema_response(br#"{"schema":"\"int\""}"#, &small),
            Err(SchemaRegistryError::TooLarge { .. })
        ));
        assert_eq!(parse_register_response(br#"{"id":7}"#).unwrap(), 7);
        for bad in [
            &br#"{"id":-1}"#[..],
            br#"{"id":4294967296}"#,
            br#"{"id":1.5}"#,
            b"",
            b"{",
        ] {
            assert!(parse_register_response(bad).is_err());
        }
        assert_eq!(
            parse_error_body(br#"{"error_code":40403,"message":"Schema\nnot found"}"#),
            (Some(40403), "Schema not found".to_string())
        );
        // Messages quoting what was sent stay short.
        let huge = format!(r#"{{"id":"{}"}}"#, "y".repeat(100_000));
        let e = parse_register_response(huge.as_bytes()).unwrap_err();
        let shown = crate::outcome::chain(&e).to_string();
        assert!(shown.len() < 1000, "{}", shown.len());
        let long = "x".repeat(10_000);
        let (code, msg) = parse_error_body(long.as_bytes());
        assert_eq!((code, msg.chars().count()), (None, MESSAGE_MAX_CHARS + 1));
    }

    #[test]
    fn classification() {
        let st = |status| SchemaRegistryError::Status {
            url: String::new(),
            status,
            error_code: None,
            message: String::new(),
        };
        assert!(st(503).is_transient() && st(500).is_transient() && st(429).is_transient());
        assert!(!st(404).is_transient() && !st(401).is_transient() && !st(422).is_transient());
        assert!(!SchemaRegistryError::SchemaNotFound {
            url: String::new(),
            id: 1
        }
        .is_transient());
        assert!(SchemaRegistryError::Timeout {
            url: String::new(),
            source: None
        }
        .is_transient());
    }
}
