package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/socketbridge/socket-bridge/go-client/internal/bridgetest"
)

// checkGenerated runs tools.sh's check_generated (the freshness check of check.sh)
// against protoDir and returns its output and whether it passed.
func checkGenerated(t *testing.T, dir, protoDir string) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", `source ./tools.sh && check_generated`)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PROTO_DIR="+protoDir)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("check_generated did not finish within a minute:\n%s", out)
	}
	return string(out), err == nil
}

// Must show 5 (kept as a test): the freshness check passes on the committed code and
// fails, naming the stale file, once the proto changes without regeneration. The change
// is made on a copy, so the real proto (which the Rust build compiles) is never touched.
func TestFreshnessCheckCatchesProtoChange(t *testing.T) {
	dir, err := bridgetest.ModuleDir()
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{".bin/protoc-gen-go", ".bin/protoc-gen-go-grpc", "node_modules/.bin/buf"} {
		if _, err := os.Stat(filepath.Join(dir, tool)); err != nil {
			t.Fatalf("%s is not installed: run ./check.sh (or ./generate.sh), which installs the pinned tools", tool)
		}
	}
	proto := filepath.Join(dir, "..", "proto")

	if out, ok := checkGenerated(t, dir, proto); !ok {
		t.Fatalf("the committed code is stale against the real proto:\n%s", out)
	}

	changed := t.TempDir()
	if err := os.CopyFS(changed, os.DirFS(proto)); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(changed, "socketbridge", "v1", "bridge.proto")
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	src = append(src, "\n// FreshnessProbe exists only in this test's copy.\nmessage FreshnessProbe {\n  string probe = 1;\n}\n"...)
	if err := os.WriteFile(file, src, 0o644); err != nil {
		t.Fatal(err)
	}
	out, ok := checkGenerated(t, dir, changed)
	if ok {
		t.Fatalf("the freshness check passed on a changed proto:\n%s", out)
	}
	for _, want := range []string{"differs: socketbridgev1/bridge.pb.go", "+type FreshnessProbe struct", "generated code is stale"} {
		if !strings.Contains(out, want) {
			t.Errorf("the failure output lacks %q:\n%s", want, out)
		}
	}
	t.Logf("freshness check on the changed copy:\n%s", out)
}
