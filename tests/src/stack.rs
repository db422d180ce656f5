//! [`TestStack`]: the usual end-to-end setup in one place — a `redis-server`, the local OpenAI
//! server, a memgate proxy (and a worker) on Qdrant Edge in a temporary directory, and what
//! stands in for the legacy service ([`Legacy`]).
//!
//! ```ignore
//! let stack = TestStack::builder()
//!     .legacy(Legacy::Fake)
//!     .configure(|config| config.rollout.percent = 100)
//!     .start()
//!     .await;
//! ```

use std::sync::Arc;

use memgate::app::{Backends, RunningProxy, RunningWorker};
use memgate::backend::vectors::VectorStore;
use memgate::config::Config;

use crate::{
    start_memgate_in_front_of_reference, start_proxy_and_worker,
    start_proxy_and_worker_sharing_vectors, start_proxy_with_backends, start_reference,
    test_config, worker_done, FakeOpenAi, FakeUpstream, RedisServer, Reference, SseRouting,
};

/// What stands in for the legacy service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Legacy {
    /// None: memgate answers everything itself.
    None,
    /// [`FakeUpstream`], a REST service that records what reached it; memgate forwards to it.
    Fake,
    /// The reference cldmemory on memgate's vector store, memgate in front of it
    /// (`upstream.url`), its answers routed as given.
    InFront(SseRouting),
    /// The reference cldmemory on memgate's vector store, beside memgate (not its upstream),
    /// to compare what each does.
    Beside,
}

/// How the stack's writes are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workers {
    /// A worker in the test process, started with the proxy.
    Started,
    /// None until [`TestStack::start_worker`].
    Later,
}

type Configure = Box<dyn FnOnce(&mut Config)>;

/// Builds a [`TestStack`].
pub struct TestStackBuilder {
    legacy: Legacy,
    workers: Workers,
    configure: Vec<Configure>,
    proxy_dir: Option<&'static str>,
}

impl TestStackBuilder {
    pub fn legacy(mut self, legacy: Legacy) -> Self {
        self.legacy = legacy;
        self
    }

    /// No worker until [`TestStack::start_worker`].
    pub fn without_worker(mut self) -> Self {
        self.workers = Workers::Later;
        self
    }

    /// Qdrant Edge's data under this subdirectory of [`TestStack::data`] (the rest of it is
    /// the test's).
    pub fn vectors_under(mut self, dir: &'static str) -> Self {
        self.proxy_dir = Some(dir);
        self
    }

    /// Changes the config after [`test_config`] (and the changes before it).
    pub fn configure(mut self, configure: impl FnOnce(&mut Config) + 'static) -> Self {
        self.configure.push(Box::new(configure));
        self
    }

    pub async fn start(self) -> TestStack {
        let redis = RedisServer::start().expect("redis-server");
        let openai = FakeOpenAi::start(64).await.expect("the OpenAI server");
        let upstream = match self.legacy {
            Legacy::Fake => Some(FakeUpstream::start().await.expect("the fake upstream")),
            _ => None,
        };
        let data = tempfile::tempdir().expect("a temporary directory");
        let vectors_dir = match self.proxy_dir {
            Some(dir) => data.path().join(dir),
            None => data.path().to_path_buf(),
        };
        let mut config = test_config(
            &vectors_dir,
            Some(redis.url()),
            Some(openai.base_url()),
            upstream.as_ref().map(FakeUpstream::url),
        );
        for configure in self.configure {
            configure(&mut config);
        }
        let prefix = config.key_prefix();
        let started = start_memgate(config, self.legacy, self.workers, &openai).await;
        TestStack {
            redis,
            openai,
            upstream,
            reference: started.reference,
            proxy: started.proxy,
            worker: started.worker,
            later: started.later,
            vectors: started.vectors,
            http: reqwest::Client::new(),
            prefix,
            data,
        }
    }
}

/// What [`start_memgate`] started.
struct Started {
    proxy: RunningProxy,
    worker: Option<RunningWorker>,
    later: Option<(Config, Backends)>,
    vectors: Option<Arc<dyn VectorStore>>,
    reference: Option<Reference>,
}

async fn start_memgate(
    config: Config,
    legacy: Legacy,
    workers: Workers,
    openai: &FakeOpenAi,
) -> Started {
    let alone = |proxy, worker, later| Started {
        proxy,
        worker,
        later,
        vectors: None,
        reference: None,
    };
    match (legacy, workers) {
        (Legacy::InFront(routing), _) => {
            let (proxy, worker, vectors, reference) =
                start_memgate_in_front_of_reference(config, &openai.base_url(), routing)
                    .await
                    .expect("memgate in front of the reference");
            Started {
                proxy,
                worker: Some(worker),
                later: None,
                vectors: Some(vectors),
                reference: Some(reference),
            }
        }
        (Legacy::Beside, _) => {
            let reference_config = config.clone();
            let (proxy, worker, vectors) = start_proxy_and_worker_sharing_vectors(config)
                .await
                .expect("proxy and worker");
            let reference = start_reference(vectors.clone(), &openai.base_url(), &reference_config)
                .await
                .expect("the reference cldmemory");
            Started {
                proxy,
                worker: Some(worker),
                later: None,
                vectors: Some(vectors),
                reference: Some(reference),
            }
        }
        (Legacy::None | Legacy::Fake, Workers::Started) => {
            let (proxy, worker) = start_proxy_and_worker(config)
                .await
                .expect("proxy and worker");
            alone(proxy, Some(worker), None)
        }
        (Legacy::None | Legacy::Fake, Workers::Later) => {
            let (proxy, backends) = start_proxy_with_backends(config.clone())
                .await
                .expect("proxy");
            alone(proxy, None, Some((config, backends)))
        }
    }
}

/// A running stack; see the module documentation.
pub struct TestStack {
    pub redis: RedisServer,
    pub openai: FakeOpenAi,
    upstream: Option<FakeUpstream>,
    reference: Option<Reference>,
    pub proxy: RunningProxy,
    pub worker: Option<RunningWorker>,
    /// Without a worker: what one started later runs on.
    later: Option<(Config, Backends)>,
    /// The vector store, as the legacy service reads it (payload keys in order).
    vectors: Option<Arc<dyn VectorStore>>,
    pub http: reqwest::Client,
    /// The store's Redis key prefix.
    pub prefix: String,
    /// The temporary directory (Qdrant Edge's data, unless under a subdirectory).
    pub data: tempfile::TempDir,
}

impl TestStack {
    /// Redis, the OpenAI server and memgate with a worker; no legacy service.
    pub fn builder() -> TestStackBuilder {
        TestStackBuilder {
            legacy: Legacy::None,
            workers: Workers::Started,
            configure: Vec::new(),
            proxy_dir: None,
        }
    }

    /// memgate's API at `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy.api_addr)
    }

    /// memgate's admin server at `path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy.admin_addr)
    }

    /// The fake legacy service ([`Legacy::Fake`]).
    pub fn upstream(&self) -> &FakeUpstream {
        self.upstream.as_ref().expect("a stack with Legacy::Fake")
    }

    pub fn upstream_mut(&mut self) -> &mut FakeUpstream {
        self.upstream.as_mut().expect("a stack with Legacy::Fake")
    }

    /// The reference cldmemory ([`Legacy::InFront`] or [`Legacy::Beside`]).
    pub fn reference(&self) -> &Reference {
        self.reference
            .as_ref()
            .expect("a stack with the reference cldmemory")
    }

    pub fn reference_mut(&mut self) -> &mut Reference {
        self.reference
            .as_mut()
            .expect("a stack with the reference cldmemory")
    }

    /// The vector store as the reference reads it ([`Legacy::InFront`] or [`Legacy::Beside`]).
    pub fn vectors(&self) -> &Arc<dyn VectorStore> {
        self.vectors
            .as_ref()
            .expect("a stack with the reference cldmemory")
    }

    /// Starts the worker of a stack built [`TestStackBuilder::without_worker`].
    pub async fn start_worker(&mut self) {
        let (config, backends) = self.later.take().expect("a stack started without a worker");
        let worker = memgate::app::start_worker_with(config, backends)
            .await
            .expect("worker");
        self.worker = Some(worker);
    }

    /// `POST /memories` of a semantic memory with `content`, waited for until the worker
    /// applied it; its id.
    pub async fn create_applied(&self, content: &str) -> String {
        let created: serde_json::Value = self
            .http
            .post(self.url("/memories"))
            .json(&serde_json::json!({"content": content, "type": "semantic"}))
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("JSON");
        let id = created["id"].as_str().expect("an id").to_string();
        self.wait_for_worker(&id).await;
        id
    }

    /// Until the memory's record is `ready` and no association job is left (watching Redis,
    /// so the wait reads nothing through the API).
    pub async fn wait_for_worker(&self, id: &str) {
        let done = worker_done(&self.redis, &self.prefix, id).await;
        assert!(done, "the worker stored {id}");
    }
}

/// `struct $name(TestStack)`, dereferencing to the stack: a suite's own helpers on it.
#[macro_export]
macro_rules! stack_env {
    ($name:ident) => {
        /// The suite's helpers on a [`TestStack`]($crate::TestStack).
        struct $name($crate::TestStack);

        impl std::ops::Deref for $name {
            type Target = $crate::TestStack;

            fn deref(&self) -> &$crate::TestStack {
                &self.0
            }
        }

        impl std::ops::DerefMut for $name {
            fn deref_mut(&mut self) -> &mut $crate::TestStack {
                &mut self.0
            }
        }
    };
}
