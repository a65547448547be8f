package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/socketbridge/socket-bridge/go-client/internal/bridgetest"
)

// operationsDoc holds the project README, whose Operations section this test runs,
// command by command, so the commands there stay true.
const operationsDoc = "README.md"

// block is one fenced code block: its info string ("sh", "json", "text") and body.
type block struct {
	lang, body string
	line       int
}

// sectionBlocks returns the fenced blocks between heading and the next "## " heading.
func sectionBlocks(t *testing.T, doc, heading string) []block {
	t.Helper()
	var blocks []block
	in, fenced := false, false
	var cur block
	var body []string
	for i, line := range strings.Split(doc, "\n") {
		switch {
		case fenced && strings.HasPrefix(line, "```"):
			fenced = false
			cur.body = strings.Join(body, "\n")
			blocks = append(blocks, cur)
		case fenced:
			body = append(body, line)
		case strings.HasPrefix(line, "## "):
			in = line == heading
		case in && strings.HasPrefix(line, "```"):
			fenced, body = true, nil
			cur = block{lang: strings.TrimPrefix(line, "```"), line: i + 1}
		}
	}
	if len(blocks) == 0 {
		t.Fatalf("%s has no code blocks under %q", operationsDoc, heading)
	}
	return blocks
}

// Must show 4: every grpcurl command of the Operations section runs against a real
// bridge, with the documented placeholders set, and prints what the section shows.
func TestOperationsCommands(t *testing.T) {
	dir, err := bridgetest.ModuleDir()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(dir, "..", operationsDoc))
	if err != nil {
		t.Fatal(err)
	}
	grpcurl := filepath.Join(dir, ".bin", "grpcurl")
	if _, err := os.Stat(grpcurl); err != nil {
		t.Fatalf("grpcurl is not installed at %s: run ./check.sh, which installs the pinned version (see tools.sh)", grpcurl)
	}
	blocks := sectionBlocks(t, string(doc), "## Operations")

	// The first block sets the placeholders; the test substitutes exactly those.
	setup := blocks[0]
	names := regexp.MustCompile(`\b([A-Z_]+)=`).FindAllStringSubmatch(setup.body, -1)
	var vars []string
	for _, n := range names {
		vars = append(vars, n[1])
	}
	if setup.lang != "sh" || !strings.HasPrefix(setup.body, "export ") || !slices.Equal(vars, []string{"BRIDGE_GRPC", "API_KEY"}) {
		t.Fatalf("%s:%d: the first block must export BRIDGE_GRPC and API_KEY, got %q", operationsDoc, setup.line, setup.body)
	}

	// A production-like bridge with alice's tab open, as after the README's Quickstart.
	b := bridgetest.Start(t, append(bridgetest.Secure, bridgetest.Fast...)...)
	browsers := bridgetest.NewBrowsers(t)
	browsers.Connect(t, "alice", b.URL(), auth("alice"))
	env := append(os.Environ(),
		"PATH="+filepath.Dir(grpcurl)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"BRIDGE_GRPC="+b.GRPC,
		"API_KEY="+bridgetest.APIKey,
	)

	commands := 0
	for i := 1; i < len(blocks); i++ {
		cmdBlock := blocks[i]
		if cmdBlock.lang != "sh" {
			t.Fatalf("%s:%d: expected a ```sh command block, found ```%s", operationsDoc, cmdBlock.line, cmdBlock.lang)
		}
		if i+1 >= len(blocks) || blocks[i+1].lang == "sh" {
			t.Fatalf("%s:%d: command has no ```json or ```text output block after it", operationsDoc, cmdBlock.line)
		}
		sample := blocks[i+1]
		i++
		commands++
		if !strings.HasPrefix(cmdBlock.body, "grpcurl ") {
			t.Fatalf("%s:%d: not a grpcurl command: %s", operationsDoc, cmdBlock.line, cmdBlock.body)
		}

		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", cmdBlock.body)
		cmd.Env = env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		runErr := cmd.Run()
		cancel()
		output := stdout.String() + stderr.String()
		t.Logf("%s:%d:\n$ %s\n%s", operationsDoc, cmdBlock.line, cmdBlock.body, output)
		if strings.Contains(output, bridgetest.APIKey) {
			t.Errorf("%s:%d: the output shows the API key", operationsDoc, cmdBlock.line)
		}

		wantFailure := strings.HasPrefix(sample.body, "ERROR:")
		if (runErr != nil) != wantFailure {
			t.Errorf("%s:%d: grpcurl exit: %v, want failure=%v", operationsDoc, cmdBlock.line, runErr, wantFailure)
			continue
		}
		var mismatch error
		switch sample.lang {
		case "json":
			mismatch = matchJSONOutput(sample.body, stdout.String())
		case "text":
			mismatch = matchLines(sample.body, output)
		default:
			mismatch = fmt.Errorf("unknown output block ```%s", sample.lang)
		}
		if mismatch != nil {
			t.Errorf("%s:%d: output does not match the block at line %d: %v", operationsDoc, cmdBlock.line, sample.line, mismatch)
		}
	}
	if commands < 7 {
		t.Errorf("only %d commands ran; the section must keep list, describe, health, Status, Push, JoinRooms and DisconnectSockets", commands)
	}

	// The pushes, the room and the disconnect really happened on alice's side.
	if r := browsers.Wait(t, "the notice", bridgetest.EventIs("alice", "notice")); string(r.Args) != `[{"text":"maintenance at 18:00"}]` {
		t.Errorf("alice got notice %s", r.Args)
	}
	if r := browsers.Wait(t, "the room notice", bridgetest.EventIs("alice", "notice")); string(r.Args) != `["hello, ops room"]` {
		t.Errorf("alice got room notice %s", r.Args)
	}
	if r := browsers.Wait(t, "bridge:disconnect", bridgetest.EventIs("alice", "bridge:disconnect")); string(r.Args) != `[{"reason":"account suspended"}]` {
		t.Errorf("alice got bridge:disconnect %s", r.Args)
	}
	browsers.Wait(t, "alice's disconnect", bridgetest.Is("disconnect", "alice"))
}

// matchJSONOutput checks that every key of the sample is in the output with the same
// value; a sample string "<...>" matches any string.
func matchJSONOutput(sample, output string) error {
	var want, got any
	if err := json.Unmarshal([]byte(sample), &want); err != nil {
		return fmt.Errorf("sample is not JSON: %w", err)
	}
	if err := json.Unmarshal([]byte(output), &got); err != nil {
		return fmt.Errorf("output is not JSON: %w", err)
	}
	return matchJSON("$", want, got)
}

func matchJSON(path string, want, got any) error {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: got %v, want an object", path, got)
		}
		for k, wv := range w {
			gv, ok := g[k]
			if !ok {
				return fmt.Errorf("%s.%s is missing", path, k)
			}
			if err := matchJSON(path+"."+k, wv, gv); err != nil {
				return err
			}
		}
		return nil
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) < len(w) {
			return fmt.Errorf("%s: got %v, want an array of at least %d", path, got, len(w))
		}
		for i := range w {
			if err := matchJSON(fmt.Sprintf("%s[%d]", path, i), w[i], g[i]); err != nil {
				return err
			}
		}
		return nil
	case string:
		if strings.HasPrefix(w, "<") && strings.HasSuffix(w, ">") {
			if s, ok := got.(string); !ok || s == "" {
				return fmt.Errorf("%s: got %v, want a non-empty string", path, got)
			}
			return nil
		}
	}
	if fmt.Sprint(want) != fmt.Sprint(got) {
		return fmt.Errorf("%s: got %v, want %v", path, got, want)
	}
	return nil
}

// matchLines checks that the sample's lines appear in the output in order; "..." lines
// stand for any output.
func matchLines(sample, output string) error {
	lines := strings.Split(output, "\n")
	at := 0
	for _, want := range strings.Split(sample, "\n") {
		if want == "..." {
			continue
		}
		i := slices.Index(lines[at:], want)
		if i < 0 {
			return fmt.Errorf("line %q not found (in order)", want)
		}
		at += i + 1
	}
	return nil
}
