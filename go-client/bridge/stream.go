package bridge

import (
	"context"
	"io"
)

// receive reads a bidirectional stream in its own goroutine, so that the caller's loop can
// watch its context as well as the stream. Messages arrive on the first channel; the first
// error ends the goroutine and arrives on the second (ended when the bridge closed the
// stream without an error status, ctx's error when ctx ended first).
func receive[M any](ctx context.Context, recv func() (M, error), ended error) (<-chan M, <-chan error) {
	msgs := make(chan M)
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := recv()
			if err == io.EOF {
				err = ended
			}
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				recvErr <- ctx.Err()
				return
			}
		}
	}()
	return msgs, recvErr
}
