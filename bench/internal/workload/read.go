package workload

import (
	"context"
	"sync"

	"github.com/segmentio/kafka-go"
)

// ReadPartitions reads partitions 0..partitions-1 of cfg.Topic from their
// start, one kafka-go partition reader each (cfg gives the brokers and the
// fetch settings; its Partition is set per reader), and calls receive with
// every record, from the readers' goroutines at once, as soon as it is
// read: a benchmark timing receipts takes its clock reading first thing in
// receive. The readers stop when ctx ends; wait waits for them.
func ReadPartitions(ctx context.Context, cfg kafka.ReaderConfig, partitions int, receive func(kafka.Message)) (wait func()) {
	var wg sync.WaitGroup
	for p := range partitions {
		c := cfg
		c.Partition = p
		r := kafka.NewReader(c)
		wg.Go(func() {
			defer r.Close()
			for {
				m, err := r.ReadMessage(ctx)
				if err != nil {
					return
				}
				receive(m)
			}
		})
	}
	return wg.Wait
}
