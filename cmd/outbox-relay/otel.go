package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// defaultServiceName is the service.name of the relay's spans when
// OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) does not
// set one.
const defaultServiceName = "outbox-relay"

// otlpSettings is what the OTEL_* variables ask of the relay's tracing.
// Only the choice to export and the protocol are read here; the exporter
// and the SDK read the rest themselves (endpoint, headers, timeout,
// compression, certificates, sampler, batch processor, resource), as the
// OpenTelemetry specification lists them.
type otlpSettings struct {
	// export is set when an OTLP endpoint is set and OTEL_TRACES_EXPORTER
	// is not none.
	export bool
	// endpoint is the variable that turned export on, for the start line.
	endpoint string
}

// parseOTLP reads the OTEL_* variables of environ that decide whether the
// relay exports spans. Without OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT nothing is exported: the relay opens
// no connection to a collector that nobody configured (the SDK's default
// endpoint, localhost:4318, is not assumed). Values the relay cannot honour
// are a *configError: another exporter than otlp or none, and another OTLP
// protocol than http/protobuf.
func parseOTLP(environ []string) (otlpSettings, error) {
	vars := map[string]string{}
	for _, kv := range environ {
		if k, v, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "OTEL_") {
			vars[k] = strings.TrimSpace(v)
		}
	}
	var s otlpSettings
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
		if vars[name] != "" {
			s.export, s.endpoint = true, name
			break
		}
	}
	switch exp := strings.ToLower(vars["OTEL_TRACES_EXPORTER"]); exp {
	case "", "otlp":
	case "none":
		s.export = false
	default:
		return otlpSettings{}, bad("OTEL_TRACES_EXPORTER", "must be otlp or none, got %q (the relay exports over OTLP/HTTP only)", vars["OTEL_TRACES_EXPORTER"])
	}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := vars[name]; p != "" && p != "http/protobuf" {
			return otlpSettings{}, bad(name, "must be http/protobuf, got %q (the relay exports over OTLP/HTTP only; point the endpoint at the collector's HTTP port, usually 4318)", p)
		}
	}
	return s, nil
}

// tracing is the relay's span export: a TracerProvider with an OTLP/HTTP
// exporter, or nothing.
type tracing struct {
	provider *sdktrace.TracerProvider // nil when nothing is exported
}

// newTracing sets up span export as s asks. The exporter makes no
// connection here: the first one comes with the first batch of spans.
func newTracing(ctx context.Context, s otlpSettings, log *slog.Logger) (*tracing, error) {
	if !s.export {
		return &tracing{}, nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, bad(s.endpoint, "cannot set up the OTLP exporter: %v", err)
	}
	// Later detectors win: OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME
	// override the default service name.
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(defaultServiceName)),
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithProcessPID(),
		resource.WithFromEnv(),
	)
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, bad("OTEL_RESOURCE_ATTRIBUTES", "%v", err)
	}
	// Export failures reach OpenTelemetry's global error handler; log them
	// like the relay's other lines instead of the SDK's default logger.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("exporting spans failed", "error", err)
	}))
	return &tracing{provider: sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))}, nil
}

// enabled reports whether spans are exported.
func (t *tracing) enabled() bool { return t.provider != nil }

// shutdown exports the spans still buffered and stops the exporter, within
// ctx's deadline.
func (t *tracing) shutdown(ctx context.Context) error {
	if t.provider == nil {
		return nil
	}
	if err := t.provider.Shutdown(ctx); err != nil {
		return fmt.Errorf("exporting the last spans: %w", err)
	}
	return nil
}

// describe says, for the start line, whether and how spans are exported.
func (s otlpSettings) describe() string {
	if !s.export {
		return "off"
	}
	return "otlp/http (" + s.endpoint + ")"
}
