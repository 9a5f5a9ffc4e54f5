package main

import (
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/outbox"
)

// receiver is an OTLP/HTTP trace receiver: it decodes what the exporter
// POSTs to /v1/traces.
type receiver struct {
	srv *httptest.Server
	mu  sync.Mutex
	// requests counts every request, whatever its path.
	requests int
	spans    []receivedSpan
}

// receivedSpan is one span with the service.name of its resource.
type receivedSpan struct {
	service string
	span    *tracepb.Span
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	r := &receiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.requests++
	r.mu.Unlock()
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
		http.NotFound(w, req)
		return
	}
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var export coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &export); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	for _, rs := range export.GetResourceSpans() {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				r.spans = append(r.spans, receivedSpan{service: service, span: s})
			}
		}
	}
	r.mu.Unlock()
	resp, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(resp)
}

func (r *receiver) received() (requests int, spans []receivedSpan) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests, append([]receivedSpan(nil), r.spans...)
}

// publishOneAndStop starts the binary with env added to the database and
// broker settings, writes one event, waits for it on Kafka, and stops the
// relay with SIGTERM. It returns the topic and the process.
func publishOneAndStop(t *testing.T, env ...string) (string, *proc) {
	t.Helper()
	db := testenv.NewDB(t)
	topic := testenv.CreateTopic(t, "relayotel", 1)
	addr := testenv.FreeAddr(t)
	p := start(t, append([]string{
		"DATABASE_URL=" + db.URL,
		"KAFKA_BROKERS=" + strings.Join(testenv.Brokers(t), ","),
		"RELAY_HTTP_ADDR=" + addr,
	}, env...)...)
	waitFor(t, p, 20*time.Second, "/readyz to answer 200", func() bool { return status("http://"+addr+"/readyz") == 200 })
	ev := outbox.Event{Topic: topic, AggregateType: "order", AggregateID: "order-7", EventType: "OrderPlaced", Payload: []byte(`{}`)}
	if err := outbox.Write(context.Background(), db.Pool, ev); err != nil {
		t.Fatal(err)
	}
	if msgs := testenv.ReadTopic(t, topic, 1, 20*time.Second); len(msgs) != 1 {
		t.Fatalf("read %d records from %s, want 1", len(msgs), topic)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(15 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	return topic, p
}

// TestProcessExportsSpansOverOTLP: with OTEL_EXPORTER_OTLP_ENDPOINT set,
// the relay's producer span for a published event reaches an OTLP/HTTP
// receiver, under the default service name and the resource attributes
// of OTEL_RESOURCE_ATTRIBUTES. The batch processor's delay is longer than
// the test, so the span arrives through the flush on SIGTERM.
func TestProcessExportsSpansOverOTLP(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t)
	topic, p := publishOneAndStop(t,
		"OTEL_EXPORTER_OTLP_ENDPOINT="+rcv.srv.URL,
		"OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=test",
		"OTEL_BSP_SCHEDULE_DELAY=600000",
	)
	_, spans := rcv.received()
	var found *tracepb.Span
	for _, s := range spans {
		if s.span.GetKind() == tracepb.Span_SPAN_KIND_PRODUCER && s.span.GetName() == "send "+topic {
			if s.service != defaultServiceName {
				t.Errorf("span %q has service.name %q, want %q", s.span.GetName(), s.service, defaultServiceName)
			}
			found = s.span
		}
	}
	if found == nil {
		names := make([]string, 0, len(spans))
		for _, s := range spans {
			names = append(names, s.span.GetKind().String()+" "+s.span.GetName())
		}
		t.Fatalf("the receiver got no producer span %q after SIGTERM; got %d spans: %v", "send "+topic, len(spans), names)
	}
	attrs := map[string]string{}
	for _, a := range found.GetAttributes() {
		attrs[a.GetKey()] = a.GetValue().GetStringValue()
	}
	if attrs["messaging.system"] != "kafka" || attrs["messaging.destination.name"] != topic {
		t.Errorf("producer span attributes = %v, want messaging.system kafka and messaging.destination.name %s", attrs, topic)
	}
	if !strings.Contains(p.stderr.String(), `"trace_export":"otlp/http (OTEL_EXPORTER_OTLP_ENDPOINT)"`) {
		t.Errorf("the start line does not say spans are exported:\n%s", p.stderr)
	}
}

// TestProcessServiceNameFromEnv: OTEL_SERVICE_NAME replaces the default
// service name, and OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (a full URL) turns
// export on as well.
func TestProcessServiceNameFromEnv(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t)
	topic, _ := publishOneAndStop(t,
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="+rcv.srv.URL+"/v1/traces",
		"OTEL_SERVICE_NAME=orders-relay",
	)
	_, spans := rcv.received()
	for _, s := range spans {
		if s.span.GetName() == "send "+topic {
			if s.service != "orders-relay" {
				t.Fatalf("span %q has service.name %q, want orders-relay", s.span.GetName(), s.service)
			}
			return
		}
	}
	t.Fatalf("the receiver got no span %q; got %d spans", "send "+topic, len(spans))
}

// TestProcessExportsNothingUnlessAsked: OTEL_TRACES_EXPORTER=none wins
// over an endpoint, and without OTEL_* variables the relay says so in its
// start line; neither sends the receiver anything.
func TestProcessExportsNothingUnlessAsked(t *testing.T) {
	t.Parallel()
	t.Run("none", func(t *testing.T) {
		t.Parallel()
		rcv := newReceiver(t)
		_, p := publishOneAndStop(t, "OTEL_EXPORTER_OTLP_ENDPOINT="+rcv.srv.URL, "OTEL_TRACES_EXPORTER=none")
		if n, _ := rcv.received(); n != 0 {
			t.Errorf("the receiver got %d requests with OTEL_TRACES_EXPORTER=none, want 0", n)
		}
		if !strings.Contains(p.stderr.String(), `"trace_export":"off"`) {
			t.Errorf("the start line does not say export is off:\n%s", p.stderr)
		}
	})
	t.Run("unset", func(t *testing.T) {
		t.Parallel()
		rcv := newReceiver(t)
		_, p := publishOneAndStop(t)
		if n, _ := rcv.received(); n != 0 {
			t.Errorf("the receiver got %d requests without OTEL_* variables, want 0", n)
		}
		if !strings.Contains(p.stderr.String(), `"trace_export":"off"`) {
			t.Errorf("the start line does not say export is off:\n%s", p.stderr)
		}
	})
}

// TestParseOTLP: which variables turn export on, and the values the relay
// refuses with the variable's name.
func TestParseOTLP(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		env     []string
		export  bool
		wantErr string
	}{
		{"nothing set", nil, false, ""},
		{"service name alone", []string{"OTEL_SERVICE_NAME=x"}, false, ""},
		{"endpoint", []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://c:4318"}, true, ""},
		{"traces endpoint", []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://c:4318/v1/traces"}, true, ""},
		{"empty endpoint", []string{"OTEL_EXPORTER_OTLP_ENDPOINT="}, false, ""},
		{"exporter otlp", []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://c:4318", "OTEL_TRACES_EXPORTER=otlp"}, true, ""},
		{"exporter none", []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://c:4318", "OTEL_TRACES_EXPORTER=none"}, false, ""},
		{"http/protobuf", []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"}, true, ""},
		{"exporter zipkin", []string{"OTEL_TRACES_EXPORTER=zipkin"}, false, `OTEL_TRACES_EXPORTER: must be otlp or none, got "zipkin"`},
		{"grpc", []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"}, false, `OTEL_EXPORTER_OTLP_PROTOCOL: must be http/protobuf, got "grpc"`},
		{"traces grpc", []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc"}, false, `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: must be http/protobuf`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := parseOTLP(tt.env)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("parseOTLP(%v) = %v, want an error starting %q", tt.env, err, tt.wantErr)
				}
				return
			}
			if err != nil || s.export != tt.export {
				t.Fatalf("parseOTLP(%v) = export %v, err %v; want export %v", tt.env, s.export, err, tt.export)
			}
		})
	}
}

// TestOTELVariablesAreNotUnknown: the binary's check for misspelt
// variables leaves OTEL_* alone.
func TestOTELVariablesAreNotUnknown(t *testing.T) {
	t.Parallel()
	_, err := parseConfig([]string{
		"DATABASE_URL=postgres://u@127.0.0.1:1/db", "KAFKA_BROKERS=127.0.0.1:9092",
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://c:4318", "OTEL_SERVICE_NAME=x", "OTEL_RESOURCE_ATTRIBUTES=a=b",
		"OTEL_TRACES_SAMPLER=parentbased_always_on", "OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20x",
	})
	if err != nil {
		t.Fatalf("parseConfig with OTEL_* variables: %v, want nil", err)
	}
}
