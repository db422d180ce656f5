//! The mutating admission webhook server: HTTPS (rustls) on its own port, `POST /mutate`
//! with an `AdmissionReview` of a Pod, answered by [`crate::admission::review`] after looking
//! the named MemoryStore up in the pod's namespace.

use std::convert::Infallible;
use std::sync::{Arc, RwLock};

use crate::http::{full, Response};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use stores::StoreLookup;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::admission::{review, wanted_store};

/// Largest AdmissionReview accepted (a Pod is far smaller).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Where the webhook finds MemoryStores; the cluster in production, a map in tests.
pub mod stores {
    use std::future::Future;
    use std::pin::Pin;

    use crate::crd::MemoryStore;

    pub type Lookup<'a> = Pin<Box<dyn Future<Output = Option<MemoryStore>> + Send + 'a>>;

    pub trait StoreLookup: Send + Sync + 'static {
        /// The MemoryStore `name` in `namespace`, if it exists.
        fn store<'a>(&'a self, namespace: &'a str, name: &'a str) -> Lookup<'a>;
    }

    /// MemoryStores read from the API server.
    pub struct ApiLookup(pub kube::Client);

    impl StoreLookup for ApiLookup {
        fn store<'a>(&'a self, namespace: &'a str, name: &'a str) -> Lookup<'a> {
            Box::pin(async move {
                let api: kube::Api<MemoryStore> = kube::Api::namespaced(self.0.clone(), namespace);
                match api.get_opt(name).await {
                    Ok(store) => store,
                    Err(error) => {
                        tracing::warn!(%error, namespace, name, "cannot read the MemoryStore");
                        None
                    }
                }
            })
        }
    }
}

/// The serving certificate, replaceable while serving: new connections get the new one.
#[derive(Debug)]
pub struct ReloadableCert {
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    pub fn new(cert_pem: &str, key_pem: &str) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = certified_key(&provider, cert_pem, key_pem)?;
        Ok(Self {
            provider,
            current: RwLock::new(key),
        })
    }

    /// Serves `cert_pem`/`key_pem` from the next handshake on.
    pub fn replace(&self, cert_pem: &str, key_pem: &str) -> anyhow::Result<()> {
        let key = certified_key(&self.provider, cert_pem, key_pem)?;
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = key;
        Ok(())
    }

    /// A TLS server configuration that asks this resolver for its certificate.
    pub fn server_config(self: &Arc<Self>) -> anyhow::Result<Arc<ServerConfig>> {
        let config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
        )
    }
}

fn certified_key(
    provider: &CryptoProvider,
    cert_pem: &str,
    key_pem: &str,
) -> anyhow::Result<Arc<CertifiedKey>> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    Ok(Arc::new(CertifiedKey::from_der(certs, key, provider)?))
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = http::Response::new(full(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

async fn answer(request: Request<Incoming>, stores: Arc<dyn StoreLookup>) -> Response {
    if request.method() != Method::POST || request.uri().path() != "/mutate" {
        return json(StatusCode::NOT_FOUND, b"{}".to_vec());
    }
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) => {
            return json(
                StatusCode::BAD_REQUEST,
                format!("{{\"error\":\"{error}\"}}").into_bytes(),
            )
        }
    };
    let response = match serde_json::from_slice::<AdmissionReview<Pod>>(&body)
        .map_err(|e| e.to_string())
        .and_then(|review| {
            let request: Result<AdmissionRequest<Pod>, _> = review.try_into();
            request.map_err(|e| e.to_string())
        }) {
        Ok(request) => {
            let store = match (
                request.namespace.as_deref(),
                request.object.as_ref().and_then(wanted_store),
            ) {
                (Some(namespace), Some(name)) => stores.store(namespace, name).await,
                _ => None,
            };
            review(&request, store.as_ref())
        }
        Err(error) => AdmissionResponse::invalid(error),
    };
    match serde_json::to_vec(&response.into_review()) {
        Ok(body) => json(StatusCode::OK, body),
        Err(_) => json(StatusCode::INTERNAL_SERVER_ERROR, b"{}".to_vec()),
    }
}

/// Serves the webhook until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    stores: Arc<dyn StoreLookup>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually EMFILE: back off instead of spinning on a full file table.
                    tracing::warn!(%error, "webhook accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let acceptor = acceptor.clone();
        let stores = stores.clone();
        tokio::spawn(async move {
            let stream = match acceptor.accept(stream).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%error, %remote, "TLS handshake failed");
                    return;
                }
            };
            let service = service_fn(move |request| {
                let stores = stores.clone();
                async move { Ok::<_, Infallible>(answer(request, stores).await) }
            });
            if let Err(error) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, %remote, "webhook connection ended with an error");
            }
        });
    }
}
