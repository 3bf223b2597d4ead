//! Logging and tracing set-up shared by every binary and by the tests.
//!
//! Logs go to stderr through `tracing-subscriber` (filter from `RUST_LOG`, default `info`). Spans
//! are exported over OTLP/gRPC only when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) variable is set, so that a machine with no collector
//! neither exports nor complains. The rest of the exporter's settings (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_TIMEOUT`) are read by the
//! OpenTelemetry SDK itself.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::{FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Keeps the exporter alive; dropping it flushes the spans still buffered.
#[must_use = "dropping the guard shuts the exporter down"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("telemetry: flushing spans at shutdown failed: {e}");
            }
        }
    }
}

fn otlp_requested() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.eq_ignore_ascii_case("none"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Installs the global subscriber and, when configured, the OTLP exporter. `service_name` is the
/// `service.name` resource unless `OTEL_SERVICE_NAME` says otherwise. Call once per process.
pub fn init(service_name: &str) -> anyhow::Result<TelemetryGuard> {
    // W3C trace context is what every hop speaks, whatever exporter is (or is not) installed.
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .fmt_fields(LogFields);

    // With nothing to export, no OpenTelemetry layer at all: a span per call would cost more CPU
    // than the call itself, for traces nobody receives. Calls through the gateway still carry
    // their caller's `traceparent` to the backend, which the gateway forwards as it came.
    let provider = if otlp_requested() {
        let mut resource = Resource::builder();
        if std::env::var("OTEL_SERVICE_NAME").is_err() {
            resource = resource.with_service_name(service_name.to_owned());
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?;
        let batches = opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch_config())
            .build();
        Some(
            SdkTracerProvider::builder()
                .with_resource(resource.build())
                .with_span_processor(batches)
                .build(),
        )
    } else {
        None
    };
    // The layer does only what our traces use: no busy/idle timing (two clock reads per poll),
    // no thread or source-location attributes.
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_location(false)
            .with_target(false)
            .with_tracer(provider.tracer("sportello"))
    });
    EXPORTING.store(otel.is_some(), std::sync::atomic::Ordering::Relaxed);

    tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init()?;
    install_panic_hook();
    Ok(TelemetryGuard { provider })
}

/// The batch exporter's settings: the `OTEL_BSP_*` variables where set, else a queue that holds
/// a burst (click day: 5,000 calls a second, three to five spans each, is 2,048 spans — the
/// SDK's default queue, past which spans are dropped — in a tenth of a second) and a delay short
/// enough that a trace is there to look at a second after its call.
fn batch_config() -> opentelemetry_sdk::trace::BatchConfig {
    use opentelemetry_sdk::trace::BatchConfigBuilder;
    let unset = |k: &str| std::env::var_os(k).is_none();
    let mut config = BatchConfigBuilder::default();
    if unset("OTEL_BSP_MAX_QUEUE_SIZE") {
        config = config.with_max_queue_size(32_768);
    }
    if unset("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") {
        config = config.with_max_export_batch_size(2_048);
    }
    if unset("OTEL_BSP_SCHEDULE_DELAY") {
        config = config.with_scheduled_delay(std::time::Duration::from_secs(1));
    }
    config.build()
}

static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process exports traces: when it does not, no span is opened per call (see
/// `trace_context`), since a span per call costs more CPU than a cheap call itself.
pub fn traces_exported() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// How span and event fields read in log lines. A span's `otel.*` and `rpc.*` fields are for
/// traces; in logs the RPC's name (`otel.name`) says enough, and formatting the rest would cost
/// every call microseconds for lines that are rarely written.
struct LogFields;

/// Fields that only traces show.
fn trace_only(field: &Field) -> bool {
    let name = field.name();
    (name.starts_with("otel.") && name != "otel.name") || name.starts_with("rpc.")
}

impl<'w> FormatFields<'w> for LogFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> std::fmt::Result {
        let mut visitor = LogVisitor(DefaultVisitor::new(writer, true));
        fields.record(&mut visitor);
        visitor.0.finish()
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> std::fmt::Result {
        let is_empty = current.fields.is_empty();
        let mut visitor = LogVisitor(DefaultVisitor::new(current.as_writer(), is_empty));
        fields.record(&mut visitor);
        visitor.0.finish()
    }
}

/// [`DefaultVisitor`], minus the fields only traces show.
struct LogVisitor<'w>(DefaultVisitor<'w>);

impl Visit for LogVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !trace_only(field) {
            self.0.record_str(field, value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if !trace_only(field) {
            self.0.record_error(field, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !trace_only(field) {
            self.0.record_debug(field, value);
        }
    }
}

/// Replaces the default panic hook, which prints the panic's message: a message may quote what
/// a request held (a PIN, a fiscal code), and logs must never carry that. The hook logs where and
/// on which thread a panic happened, and nothing else; the server's panic guard answers the call.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let line = describe_panic(info);
        tracing::error!("{line}");
        // Also on stderr directly, in case the panic happened before or outside the subscriber.
        if !tracing::dispatcher::has_been_set() {
            eprintln!("{line}");
        }
    }));
}

/// The one line logged for a panic: thread and location, never the payload.
pub fn describe_panic(info: &std::panic::PanicHookInfo<'_>) -> String {
    panic_line(info.location(), std::thread::current().name())
}

fn panic_line(location: Option<&std::panic::Location<'_>>, thread: Option<&str>) -> String {
    let thread = thread.unwrap_or("<unnamed>");
    match location {
        Some(l) => format!(
            "thread '{thread}' panicked at {}:{}:{} (message withheld)",
            l.file(),
            l.line(),
            l.column()
        ),
        None => format!("thread '{thread}' panicked (message withheld)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_logged_by_thread_and_location_without_its_message() {
        let caught = std::sync::Arc::new(std::sync::Mutex::new(None));
        let seen = caught.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let line = panic_line(info.location(), std::thread::current().name());
            *seen.lock().expect("lock") = Some(line);
        }));
        let _ = std::thread::Builder::new()
            .name("handler".into())
            .spawn(|| panic!("initial PIN AÀÀÀÀÀÀÀB"))
            .expect("thread")
            .join();
        std::panic::set_hook(previous);
        let line = caught.lock().expect("lock").clone().expect("the hook ran");
        assert!(
            line.starts_with("thread 'handler' panicked at platform/src/telemetry.rs:"),
            "{line}"
        );
        assert!(!line.contains("PIN") && !line.contains("AÀ"), "{line}");
    }

    #[test]
    fn log_lines_name_the_rpc_and_leave_its_trace_attributes_to_traces() {
        use std::sync::{Arc, Mutex};
        let written = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = written.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || WriteTo(sink.clone()))
            .with_ansi(false)
            .with_target(false)
            .fmt_fields(LogFields)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "rpc",
                otel.name = "sportello.claims.v1.ClaimsService/ListBenefits",
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.grpc.status_code = tracing::field::Empty,
            );
            span.record("rpc.grpc.status_code", 0);
            span.in_scope(|| tracing::warn!(attempt = 2, "storage failure"));
        });
        let line = String::from_utf8(written.lock().expect("lock").clone()).expect("utf-8");
        assert!(
            line.contains(
                r#"rpc{otel.name="sportello.claims.v1.ClaimsService/ListBenefits"}: storage failure attempt=2"#
            ),
            "{line}"
        );
        assert!(!line.contains("otel.kind") && !line.contains("rpc.system"), "{line}");
    }

    struct WriteTo(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for WriteTo {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
