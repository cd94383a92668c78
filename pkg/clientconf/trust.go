package clientconf

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// systemTrust plans <dir>/<alias>.crt, the CA in the system trust store
// (update-ca-certificates reads only *.crt files). The refresh command runs
// only when the file changes.
func (p *plan) systemTrust(dir, alias string, ca []byte) error {
	changed, err := p.put(string(System), filepath.Join(dir, alias+".crt"), 0o644, ca)
	if changed {
		p.trustChanged = true
	}
	return err
}

// runCommand runs a trust store refresh command, with its output in the
// error when it fails.
func runCommand(ctx context.Context, log *slog.Logger, argv []string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	log.Info("ran", "command", strings.Join(argv, " "), "duration", time.Since(start), "error", err)
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}
