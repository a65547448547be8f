package bridge_test

import (
	"testing"
	"time"

	"github.com/socketbridge/socket-bridge/go-client/bridge"
)

func TestBackoffDelay(t *testing.T) {
	b := bridge.Backoff{Initial: 100 * time.Millisecond, Max: 2 * time.Second, Multiplier: 2, Jitter: 0.5}
	for attempt := range 100 {
		base := min(100*time.Millisecond<<min(attempt, 20), 2*time.Second)
		for range 20 {
			d := b.Delay(attempt)
			if d > base || d < base/2 {
				t.Fatalf("attempt %d: delay %v outside [%v, %v]", attempt, d, base/2, base)
			}
		}
	}

	// Jitter really varies the delay.
	seen := map[time.Duration]bool{}
	for range 50 {
		seen[b.Delay(3)] = true
	}
	if len(seen) < 10 {
		t.Errorf("50 jittered delays took only %d values", len(seen))
	}

	// The zero value has sane defaults.
	var zero bridge.Backoff
	if d := zero.Delay(0); d <= 0 || d > 250*time.Millisecond {
		t.Errorf("zero Backoff first delay %v", d)
	}
	if d := zero.Delay(1000); d > 10*time.Second || d < 8*time.Second {
		t.Errorf("zero Backoff capped delay %v", d)
	}
}
