package bridge

import (
	"math"
	"math/rand/v2"
	"time"
)

// Backoff is the wait between attempts to re-open a dropped Events stream: exponential,
// capped, with random jitter so that many backends do not reconnect to a restarted
// bridge in lockstep. The zero value uses the defaults given on each field.
type Backoff struct {
	// Initial is the wait before the first retry. Default 250ms.
	Initial time.Duration
	// Max caps the wait. Default 10s.
	Max time.Duration
	// Multiplier grows the wait after each failed attempt. Default 2.
	Multiplier float64
	// Jitter is the fraction of each wait that is random, from 0 (none) to 1 (the wait
	// is anywhere between 0 and the computed delay). Default 0.2; negative means none.
	Jitter float64
}

// Delay returns how long to wait before retry number attempt (0 for the first retry).
func (b Backoff) Delay(attempt int) time.Duration {
	initial, maxDelay, mult, jitter := b.Initial, b.Max, b.Multiplier, b.Jitter
	if initial <= 0 {
		initial = 250 * time.Millisecond
	}
	if maxDelay <= 0 {
		maxDelay = 10 * time.Second
	}
	if maxDelay < initial {
		maxDelay = initial
	}
	if mult < 1 {
		mult = 2
	}
	switch {
	case jitter == 0:
		jitter = 0.2
	case jitter < 0:
		jitter = 0
	case jitter > 1:
		jitter = 1
	}
	if attempt < 0 {
		attempt = 0
	}
	d := float64(initial) * math.Pow(mult, float64(attempt))
	if d > float64(maxDelay) || math.IsInf(d, 0) || math.IsNaN(d) {
		d = float64(maxDelay)
	}
	// Take up to jitter·d off at random: the result stays within [d·(1-jitter), d].
	d -= jitter * d * rand.Float64()
	return time.Duration(d)
}
