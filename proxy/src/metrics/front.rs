//! What the fronts count: requests and their answers (REST and MCP), refusals, the rollout, and
//! memgate's MCP session with the legacy service.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use super::{register, LATENCY_BUCKETS};

#[derive(Clone)]
pub struct FrontMetrics {
    /// `op`, `path`, `cache`, `status` (the status class, `2xx`..`5xx`).
    pub requests: IntCounterVec,
    /// `op`, `path`, `cache`.
    pub request_duration: HistogramVec,
    /// `code`: why a request was refused.
    pub rejected: IntCounterVec,
    pub rollout_percent: IntGauge,
    /// Requests refused at once because `limits.maxInFlight` were already in flight.
    pub overloaded: IntCounter,
    /// MCP tool calls: `tool`, `path` (`fast`, `legacy`), `outcome` (`ok`, `error`,
    /// `cancelled`, `degraded`).
    pub mcp_tool_calls: IntCounterVec,
    /// Time from a tool call's arrival to its result: `tool`, `path`.
    pub mcp_tool_duration: HistogramVec,
    /// Open MCP client sessions, `transport` (`sse`, `streamable`, `stdio`).
    pub mcp_sessions: IntGaugeVec,
    /// memgate's session with the legacy MCP service: `event` (`opened`, `open_failed`, and
    /// why one was lost: `unanswered` (a ping went unanswered), `ended` (its stream or
    /// process ended), `refused` (the service no longer knows it)).
    pub upstream_sessions: IntCounterVec,
    /// Calls sent again on a new legacy session after theirs was lost (reads only).
    pub upstream_resent: IntCounter,
    /// 1 while memgate's legacy MCP session answers, 0 while it is lost or cannot be opened.
    pub upstream_up: IntGauge,
    /// Shadow comparisons: `tool`, `outcome` (`match`, `mismatch`, `stale_within_ttl`,
    /// `legacy_error`, `fast_error`, `skipped`).
    pub shadow_comparisons: IntCounterVec,
}

impl FrontMetrics {
    pub(super) fn new(registry: &Registry) -> Self {
        let requests = register(
            registry,
            IntCounterVec::new(
                Opts::new("memgate_requests_total", "Memory API requests answered"),
                &["op", "path", "cache", "status"],
            )
            .expect("valid metric"),
        );
        let request_duration = register(
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "memgate_request_duration_seconds",
                    "Time to answer a Memory API request",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["op", "path", "cache"],
            )
            .expect("valid metric"),
        );
        let rejected = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "memgate_rejected_requests_total",
                    "Requests refused with a 4xx, by error code",
                ),
                &["code"],
            )
            .expect("valid metric"),
        );
        let rollout_percent = register(
            registry,
            IntGauge::new(
                "memgate_rollout_percent",
                "Share of requests routed to the fast path",
            )
            .expect("valid metric"),
        );
        let overloaded = register(
            registry,
            IntCounter::new(
                "memgate_overloaded_requests_total",
                "Requests refused with 503 because too many were in flight",
            )
            .expect("valid metric"),
        );
        let mcp_tool_calls = register(
            registry,
            IntCounterVec::new(
                Opts::new("memgate_mcp_tool_calls_total", "MCP tool calls answered"),
                &["tool", "path", "outcome"],
            )
            .expect("valid metric"),
        );
        let mcp_tool_duration = register(
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "memgate_mcp_tool_duration_seconds",
                    "Time from an MCP tool call to its result",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["tool", "path"],
            )
            .expect("valid metric"),
        );
        let mcp_sessions = register(
            registry,
            IntGaugeVec::new(
                Opts::new("memgate_mcp_sessions", "Open MCP client sessions"),
                &["transport"],
            )
            .expect("valid metric"),
        );
        let upstream_sessions = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "memgate_upstream_mcp_sessions_total",
                    "memgate's sessions with the legacy MCP service: opened, failed to open, lost",
                ),
                &["event"],
            )
            .expect("valid metric"),
        );
        for event in ["opened", "open_failed", "unanswered", "ended", "refused"] {
            upstream_sessions.with_label_values(&[event]);
        }
        let upstream_resent = register(
            registry,
            IntCounter::new(
                "memgate_upstream_mcp_resent_total",
                "Read calls sent again on a new legacy MCP session after theirs was lost",
            )
            .expect("valid metric"),
        );
        let upstream_up = register(
            registry,
            IntGauge::new(
                "memgate_upstream_mcp_up",
                "1 while memgate's legacy MCP session answers, else 0",
            )
            .expect("valid metric"),
        );
        let shadow_comparisons = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "memgate_shadow_comparisons_total",
                    "Fast-path reads compared with the legacy service's answer, by outcome",
                ),
                &["tool", "outcome"],
            )
            .expect("valid metric"),
        );
        Self {
            requests,
            request_duration,
            rejected,
            rollout_percent,
            overloaded,
            mcp_tool_calls,
            mcp_tool_duration,
            mcp_sessions,
            upstream_sessions,
            upstream_resent,
            upstream_up,
            shadow_comparisons,
        }
    }
}
