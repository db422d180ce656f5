//! Who may reach the API port, checked before anything is read or written.
//!
//! The threat: memgate listens on the user's machine or in a pod, and anything that can reach
//! the port can plant a memory the agent will later read as its own. So, in this order:
//!
//! 1. **Host** (while listening on loopback): a request for a name that is not a loopback
//!    name or in `security.allowedHosts` is refused: a page whose DNS was pointed at
//!    127.0.0.1 (DNS rebinding) cannot read memgate as a "same-origin" site.
//! 2. **Origin**: a web page's request from an origin outside `security.allowedOrigins` is
//!    refused, and so is a cross-site browser request that names no origin
//!    (`Sec-Fetch-Site: cross-site`). Requests without either (CLIs, SDKs) pass.
//! 3. **CORS preflights** of allowed origins are answered here.
//! 4. **Content type**: a REST request with a body must be JSON, so no cross-site "simple
//!    request" (a form, `text/plain`) can write. The MCP endpoints check theirs as the MCP
//!    transports do.
//! 5. **Tokens** (`security.tokens`, `security.oauth`): a request must carry a known bearer
//!    token or a valid JWT of the configured authorization server; its tenant replaces any
//!    tenant header the client sent, and the token is never passed on to the legacy service.
//!    `/.well-known/oauth-protected-resource` is served without one (RFC 9728).

pub mod oauth;
pub mod origins;
pub mod tokens;
pub mod write_limit;

use http::header::{
    HeaderName, HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_METHOD, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, ORIGIN,
    TRANSFER_ENCODING, VARY, WWW_AUTHENTICATE,
};
use http::{request::Parts, Method, StatusCode};

use crate::config::Config;
use crate::front::error::ApiError;
use crate::front::http::Response;

pub use oauth::OAuthVerifier;
pub use origins::{AllowedHosts, AllowedOrigins};
pub use tokens::{StaticTokens, TokenFile, TokenFileError};
pub use write_limit::WriteLimit;

/// The request headers a page of an allowed origin may send (answered to preflights).
const ALLOWED_REQUEST_HEADERS: &str = "authorization, content-type, accept, idempotency-key, \
     memory-metadata, mcp-session-id, mcp-protocol-version, mcp-method, mcp-name, \
     last-event-id, x-memgate-route";
/// The response headers such a page may read.
const EXPOSED_HEADERS: &str = "mcp-session-id, location, www-authenticate, retry-after, \
     x-memgate-path, x-memgate-cache, x-memgate-degraded";
const ALLOWED_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";

/// The checks of one API listener.
#[derive(Debug)]
pub struct Gate {
    origins: AllowedOrigins,
    /// Checked only while listening on a loopback address.
    hosts: Option<AllowedHosts>,
    tokens: Option<TokenFile>,
    oauth: Option<OAuthVerifier>,
    /// The `WWW-Authenticate` challenge of a request without a valid token.
    challenge: String,
    /// The tenant header the rest of memgate reads the scope from (set from the token).
    scope_header: Option<HeaderName>,
    /// Headers allowed in preflights besides the fixed ones (the tenant and sticky headers).
    preflight_headers: HeaderValue,
}

/// A request the gate let through, and what its answer needs for the browser.
#[derive(Debug, Default)]
pub struct Admitted {
    /// The allowed origin to echo in `Access-Control-Allow-Origin`.
    origin: Option<HeaderValue>,
}

impl Admitted {
    /// Adds the CORS headers of an allowed origin's request to its answer.
    pub fn decorate(self, response: &mut Response) {
        if let Some(origin) = self.origin {
            let headers = response.headers_mut();
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.append(VARY, HeaderValue::from_static("Origin"));
            headers.insert(
                ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSED_HEADERS),
            );
        }
    }
}

impl Gate {
    /// From the configuration; the tokens file is read now.
    pub fn from_config(config: &Config) -> Result<Self, TokenFileError> {
        let security = &config.security;
        let scope_header = config
            .scope
            .as_ref()
            .and_then(|scope| HeaderName::try_from(scope.header.as_str()).ok());
        let tokens = security
            .tokens
            .as_ref()
            .map(|tokens| TokenFile::load(&tokens.path, scope_header.is_some()))
            .transpose()?;
        let oauth = security
            .oauth
            .clone()
            .map(|oauth| OAuthVerifier::new(oauth, scope_header.is_some()));
        let challenge = match &oauth {
            Some(oauth) => format!(
                "Bearer realm=\"memgate\", resource_metadata=\"{}\"",
                oauth::metadata_url(oauth.resource())
            ),
            None => "Bearer realm=\"memgate\"".to_string(),
        };
        let mut preflight = ALLOWED_REQUEST_HEADERS.to_string();
        for extra in [
            config.scope.as_ref().map(|scope| scope.header.as_str()),
            config.rollout.sticky_header.as_deref(),
        ]
        .into_iter()
        .flatten()
        {
            preflight.push_str(", ");
            preflight.push_str(&extra.to_ascii_lowercase());
        }
        Ok(Self {
            origins: AllowedOrigins::new(&security.allowed_origins),
            hosts: config
                .listen
                .ip()
                .is_loopback()
                .then(|| AllowedHosts::new(&security.allowed_hosts)),
            tokens,
            oauth,
            challenge,
            scope_header,
            preflight_headers: HeaderValue::from_str(&preflight)
                .unwrap_or_else(|_| HeaderValue::from_static(ALLOWED_REQUEST_HEADERS)),
        })
    }

    /// Reads the tokens file again whenever it changes (checked every 2 s), until the process
    /// ends: a rotated Secret takes effect without a restart.
    pub fn spawn_token_reload(self: &std::sync::Arc<Self>) {
        if self.tokens.is_none() {
            return;
        }
        let gate = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(std::time::Duration::from_secs(2));
            loop {
                ticks.tick().await;
                let Some(gate) = gate.upgrade() else {
                    return;
                };
                if let Some(tokens) = &gate.tokens {
                    tokens.reload_if_changed();
                }
            }
        });
    }

    /// Whether bearer tokens are required.
    pub fn requires_tokens(&self) -> bool {
        self.tokens.is_some() || self.oauth.is_some()
    }

    /// Lets a request through (its tenant header set from its token, its token removed), or
    /// answers it: a refusal, or a CORS preflight.
    pub async fn admit(&self, parts: &mut Parts) -> Result<Admitted, Refusal> {
        self.check_host(parts)?;
        let origin = self.check_origin(parts)?;
        if let Some(origin) = &origin {
            if parts.method == Method::OPTIONS
                && parts.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
            {
                return Err(Refusal::Answered(Box::new(self.preflight(origin.clone()))));
            }
        }
        check_content_type(parts)?;
        if let Some(metadata) = self.protected_resource(parts) {
            return Err(Refusal::Answered(Box::new(metadata)));
        }
        self.authenticate(parts).await?;
        Ok(Admitted { origin })
    }

    fn check_host(&self, parts: &Parts) -> Result<(), Refusal> {
        let Some(hosts) = &self.hosts else {
            return Ok(());
        };
        let host = parts
            .headers
            .get(HOST)
            .and_then(|host| host.to_str().ok())
            .map(str::to_string)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()));
        match host {
            Some(host) if !hosts.allows(&host) => Err(Refusal::Error(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_host",
                format!(
                    "memgate listens on loopback and serves requests for localhost; `{host}` is \
                     not an allowed host name (security.allowedHosts)"
                ),
            ))),
            _ => Ok(()),
        }
    }

    /// The request's allowed origin, if it names one.
    fn check_origin(&self, parts: &Parts) -> Result<Option<HeaderValue>, Refusal> {
        let Some(origin) = parts.headers.get(ORIGIN) else {
            let cross_site = parts
                .headers
                .get("sec-fetch-site")
                .is_some_and(|site| site.as_bytes().eq_ignore_ascii_case(b"cross-site"));
            if cross_site {
                return Err(Refusal::Error(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden_origin",
                    "a cross-site browser request that names no Origin is refused",
                )));
            }
            return Ok(None);
        };
        let text = origin.to_str().unwrap_or_default();
        if self.origins.allows(text) {
            return Ok(Some(origin.clone()));
        }
        Err(Refusal::Error(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_origin",
            format!(
                "requests from web pages of `{text}` are refused: it is not an allowed origin \
                 (security.allowedOrigins)"
            ),
        )))
    }

    fn preflight(&self, origin: HeaderValue) -> Response {
        let mut response = crate::front::http::empty_response(StatusCode::NO_CONTENT);
        let headers = response.headers_mut();
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOWED_METHODS),
        );
        headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, self.preflight_headers.clone());
        headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        headers.append(VARY, HeaderValue::from_static("Origin"));
        response
    }

    /// `GET /.well-known/oauth-protected-resource[/…]`, answered without a token.
    fn protected_resource(&self, parts: &Parts) -> Option<Response> {
        let oauth = self.oauth.as_ref()?;
        let path = parts.uri.path();
        let wanted = parts.method == Method::GET
            && (path == "/.well-known/oauth-protected-resource"
                || path.starts_with("/.well-known/oauth-protected-resource/"));
        wanted.then(|| {
            crate::front::http::json_response(
                StatusCode::OK,
                oauth::protected_resource_metadata(oauth).to_string().into(),
            )
        })
    }

    async fn authenticate(&self, parts: &mut Parts) -> Result<(), Refusal> {
        if !self.requires_tokens() {
            return Ok(());
        }
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_token);
        let Some(presented) = presented else {
            return Err(Refusal::Unauthorized {
                error: ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "a bearer token is required (Authorization: Bearer …)",
                ),
                challenge: self.challenge.clone(),
            });
        };
        let bearer = self
            .bearer(presented)
            .await
            .map_err(|message| Refusal::Unauthorized {
                error: ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", message),
                challenge: format!("{}, error=\"invalid_token\"", self.challenge),
            })?;
        let tenant = bearer.tenant;
        // Never passed on: the legacy service gets memgate's own credential, if any.
        parts.headers.remove(AUTHORIZATION);
        if let Some(header) = &self.scope_header {
            parts.headers.remove(header);
            if let Some(value) = tenant.and_then(|t| HeaderValue::from_str(&t).ok()) {
                parts.headers.insert(header.clone(), value);
            }
        }
        Ok(())
    }
}

impl Gate {
    /// Who `presented` speaks for: a static token, else a JWT of the authorization server;
    /// why not, when neither.
    async fn bearer(&self, presented: &str) -> Result<tokens::Bearer, String> {
        if let Some(tokens) = &self.tokens {
            if let Some(bearer) = tokens.tokens().bearer(presented) {
                return Ok(bearer.clone());
            }
        }
        match &self.oauth {
            Some(oauth) => oauth.verify(presented).await.map_err(|error| {
                tracing::debug!(%error, "bearer token refused");
                error.to_string()
            }),
            None => Err("the bearer token is not valid".into()),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A REST request with a body must say it is JSON (`application/json` or `…+json`).
fn check_content_type(parts: &Parts) -> Result<(), Refusal> {
    if matches!(parts.uri.path(), "/sse" | "/messages" | "/mcp") {
        return Ok(());
    }
    let has_body = parts.headers.contains_key(TRANSFER_ENCODING)
        || parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|length| length.to_str().ok())
            .is_some_and(|length| length.trim() != "0");
    if !has_body {
        return Ok(());
    }
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if is_json(content_type) {
        return Ok(());
    }
    Err(Refusal::Error(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!(
            "a request body must be JSON (Content-Type: application/json), not `{content_type}`"
        ),
    )))
}

/// A `Content-Type`'s media type without its parameters, lowercased.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// `application/json` or `application/<x>+json`, with any parameters.
pub fn is_json(content_type: &str) -> bool {
    let essence = media_type(content_type);
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.ends_with("+json"))
}

/// A request the gate answered itself.
#[derive(Debug)]
pub enum Refusal {
    Error(ApiError),
    Unauthorized {
        error: ApiError,
        challenge: String,
    },
    /// Not a refusal: an allowed origin's CORS preflight, or the protected-resource
    /// metadata, answered.
    Answered(Box<Response>),
}

impl Refusal {
    /// The metric label of the refusal (`None` for an answer).
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Self::Error(error) | Self::Unauthorized { error, .. } => Some(error.code),
            Self::Answered(_) => None,
        }
    }

    pub fn into_response(self) -> Response {
        match self {
            Self::Error(error) => error.into_response(),
            Self::Unauthorized { error, challenge } => {
                let mut response = error.into_response();
                if let Ok(challenge) = HeaderValue::from_str(&challenge) {
                    response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
                }
                response
            }
            Self::Answered(response) => *response,
        }
    }
}

#[cfg(test)]
mod tests;
