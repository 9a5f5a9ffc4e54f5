package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	wkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The watermill peer: watermill-sql's Postgres subscriber (default schema and
// offsets adapter, the pair the watermill docs give for PostgreSQL) feeding
// watermill's forwarder component, which publishes each message to Kafka with
// watermill-kafka's publisher. It runs as a child process: this binary
// re-executed with wmChildEnv set.
const (
	wmChildEnv     = "PEERS_WATERMILL_CHILD"
	wmDBEnv        = "PEERS_WATERMILL_DB"
	wmBrokersEnv   = "PEERS_WATERMILL_BROKERS"
	wmReadyToken   = "watermill-started"
	wmForwardTopic = "outbox_events"
	// wmKeyMetadata is the message metadata the Kafka key comes from, through
	// watermill-kafka's partitioning marshaler.
	wmKeyMetadata = "aggregate_id"
)

func wmSchema() wsql.DefaultPostgreSQLSchema { return wsql.DefaultPostgreSQLSchema{} }

func wmSubscriber(db wsql.Beginner, logger watermill.LoggerAdapter) (*wsql.Subscriber, error) {
	return wsql.NewSubscriber(db, wsql.SubscriberConfig{
		SchemaAdapter:    wmSchema(),
		OffsetsAdapter:   wsql.DefaultPostgreSQLOffsetsAdapter{},
		InitializeSchema: true,
	}, logger)
}

// wmPrepare creates the forwarder's SQL topic table and its offsets table,
// as the subscriber would on its first Subscribe.
func wmPrepare(ctx context.Context, pool *pgxpool.Pool) error {
	sub, err := wmSubscriber(wsql.BeginnerFromPgx(pool), watermill.NopLogger{})
	if err != nil {
		return err
	}
	defer sub.Close()
	return sub.SubscribeInitialize(wmForwardTopic)
}

// wmWrite commits events in one transaction the way a watermill user writes
// to the outbox: a watermill-sql publisher on the transaction, decorated by
// the forwarder's publisher so each message is enveloped with its Kafka
// topic.
func wmWrite(ctx context.Context, pool *pgxpool.Pool, topic string, msgs []*message.Message) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		pub, err := wsql.NewPublisher(wsql.TxFromPgx(tx), wsql.PublisherConfig{SchemaAdapter: wmSchema()}, nil)
		if err != nil {
			return err
		}
		fwd := forwarder.NewPublisher(pub, forwarder.PublisherConfig{ForwarderTopic: wmForwardTopic})
		return fwd.Publish(topic, msgs...)
	})
}

// watermillMain is the forwarder child. It prints wmReadyToken once the
// forwarder's router runs, and stops on SIGTERM.
func watermillMain() int {
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "watermill forwarder: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	pool, err := pgxpool.New(ctx, os.Getenv(wmDBEnv))
	if err != nil {
		return fail(err)
	}
	defer pool.Close()
	logger := watermill.NewSlogLoggerWithLevelMapping(nil, nil)
	sub, err := wmSubscriber(wsql.BeginnerFromPgx(pool), logger)
	if err != nil {
		return fail(err)
	}
	// watermill-kafka's default sync publisher config, with acks=all like
	// the other systems (sarama's default is the leader's ack only).
	kcfg := wkafka.DefaultSaramaSyncPublisherConfig()
	kcfg.Producer.RequiredAcks = sarama.WaitForAll
	pub, err := wkafka.NewPublisher(wkafka.PublisherConfig{
		Brokers: strings.Split(os.Getenv(wmBrokersEnv), ","),
		Marshaler: wkafka.NewWithPartitioningMarshaler(func(_ string, m *message.Message) (string, error) {
			return m.Metadata.Get(wmKeyMetadata), nil
		}),
		OverwriteSaramaConfig: kcfg,
	}, logger)
	if err != nil {
		return fail(err)
	}
	fwd, err := forwarder.NewForwarder(sub, pub, logger, forwarder.Config{ForwarderTopic: wmForwardTopic})
	if err != nil {
		return fail(err)
	}
	go func() {
		select {
		case <-fwd.Running():
			fmt.Println(wmReadyToken)
		case <-ctx.Done():
		}
	}()
	go func() {
		<-ctx.Done()
		_ = fwd.Close()
	}()
	if err := fwd.Run(context.Background()); err != nil {
		return fail(err)
	}
	_ = pub.Close()
	return 0
}
