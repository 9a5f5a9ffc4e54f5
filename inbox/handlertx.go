package inbox

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
)

// ErrTxOwnedByInbox is what Commit and Rollback return on the transaction a
// [Handler] gets. The inbox commits that transaction after the handler
// returns nil, with the message's inbox claim (and, in a batch, the claims
// and work of the messages around it), and rolls it back after an error:
// a handler that committed it itself would mark the later messages of its
// batch claimed before they were applied, and they would be dropped as
// duplicates. Return nil to commit, an error to roll back. Nested
// transactions (tx.Begin, a savepoint) commit and roll back as usual.
var ErrTxOwnedByInbox = errors.New("inbox: the handler's transaction belongs to the inbox: return nil to commit it, an error to roll it back")

// handlerTx is the transaction handed to a Handler: the inbox's, except
// that it cannot be committed or rolled back through it.
type handlerTx struct{ pgx.Tx }

var _ pgx.Tx = handlerTx{}

// Commit refuses: the inbox commits after the handler returns.
func (handlerTx) Commit(context.Context) error { return ErrTxOwnedByInbox }

// Rollback refuses: the inbox rolls back when the handler returns an error.
func (handlerTx) Rollback(context.Context) error { return ErrTxOwnedByInbox }
