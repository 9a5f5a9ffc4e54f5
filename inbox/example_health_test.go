package inbox_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/inbox"
)

// A service mounts the consumer's /healthz and /readyz on its own mux, for
// its liveness and readiness probes.
func ExampleConsumer_HealthHandler() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	brokers := strings.Split(os.Getenv("KAFKA_BROKERS"), ",")
	suffix := time.Now().UnixNano()
	topic := fmt.Sprintf("example-health-%d", suffix)
	admin := &kafka.Client{Addr: kafka.TCP(brokers...)}
	res, err := admin.CreateTopics(ctx, &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: 1, ReplicationFactor: 1}},
	})
	if err == nil {
		err = res.Errors[topic]
	}
	if err != nil {
		log.Fatal(err)
	}
	c, err := inbox.NewConsumer(pool, inbox.Config{
		Brokers: brokers,
		GroupID: fmt.Sprintf("example-health-%d", suffix),
		Topics:  []string{topic},
	}, func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error { return nil })
	if err != nil {
		log.Fatal(err)
	}

	mux := http.NewServeMux()
	h := c.HealthHandler()
	mux.Handle("GET /healthz", h)
	mux.Handle("GET /readyz", h)
	srv := httptest.NewServer(mux) // a service: http.ListenAndServe(":8080", mux)
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			log.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(body))
	}

	fmt.Println(get("/readyz"))
	runCtx, stop := context.WithCancel(ctx)
	stopped := make(chan error)
	go func() { stopped <- c.Run(runCtx) }()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if code, _ := get("/readyz"); code == http.StatusOK || time.Now().After(deadline) {
			break
		}
	}
	fmt.Println(get("/healthz"))
	fmt.Println(get("/readyz"))
	stop()
	if err := <-stopped; err != nil {
		log.Fatal(err)
	}
	fmt.Println(get("/healthz"))
	// Output:
	// 503 inbox: consumer is not running
	// 200 ok
	// 200 ready
	// 503 inbox: consumer is not running
}
